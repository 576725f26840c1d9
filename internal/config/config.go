// Package config fills the flags of a cobra command tree from a TOML file
// and NIXIPFS_* environment variables. It knows no flag by name: every flag
// of every command is a key, so flags added later are covered as they come.
//
// Keys: the root command's flags are top-level keys (data-dir = "..."); the
// flags of a command live in a table named by its path ([daemon] listen,
// [follow.ls] json). A key's environment variable is NIXIPFS_ and the key in
// upper case with '.' and '-' turned into '_' (NIXIPFS_DATA_DIR,
// NIXIPFS_DAEMON_LISTEN). Precedence: command line, then environment, then
// file, then the flag's default.
package config

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// EnvPrefix starts every environment variable name.
const EnvPrefix = "NIXIPFS_"

// Annotation, set to "skip" on a command (cobra Annotations) or a flag
// (pflag annotations), leaves it out of the configuration: no key, no
// environment variable.
const Annotation = "nixipfs/config"

// DefaultText is a flag annotation naming its default for the reference,
// for defaults that depend on the machine (such as a home directory).
const DefaultText = "nixipfs/default"

// Key is one configurable flag.
type Key struct {
	Name    string // "data-dir", "daemon.listen", "follow.ls.json"
	Env     string // NIXIPFS_DATA_DIR
	Command *cobra.Command
	Flag    *pflag.Flag
}

// Source says where a flag's value came from.
type Source struct {
	Kind string // "flag", "env", "file" or "default"
	Name string // the variable for "env", the file for "file"
}

func (s Source) String() string {
	if s.Name == "" {
		return s.Kind
	}
	return s.Kind + " " + s.Name
}

// Config is a loaded file and environment, ready to apply to the flags of
// the tree it was checked against.
type Config struct {
	file    string
	keys    []Key
	byName  map[string]Key
	byFlag  map[*pflag.Flag]Key
	tables  map[string]bool
	values  map[string]any // key name → value from the file
	lookup  func(string) (string, bool)
	sources map[*pflag.Flag]Source
}

// DefaultFile is $XDG_CONFIG_HOME/nixipfs/config.toml, else
// ~/.config/nixipfs/config.toml ("" when neither can be found).
func DefaultFile(lookupEnv func(string) (string, bool)) string {
	if d, ok := lookupEnv("XDG_CONFIG_HOME"); ok && d != "" {
		return filepath.Join(d, "nixipfs", "config.toml")
	}
	if h, ok := lookupEnv("HOME"); ok && h != "" {
		return filepath.Join(h, ".config", "nixipfs", "config.toml")
	}
	return ""
}

// Keys lists every configurable flag of root's tree, root's first, then
// each command's in the tree's order. Two flags with the same key or
// variable, or a key that is also a command's table, are an error.
func Keys(root *cobra.Command) ([]Key, error) {
	var keys []Key
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if skipped(c) {
			return
		}
		// A command's own flags, persistent or not; inherited ones belong
		// to the command that declared them.
		own := c.LocalNonPersistentFlags()
		own.AddFlagSet(c.PersistentFlags())
		own.VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" || slices.Contains(f.Annotations[Annotation], "skip") {
				return
			}
			name := strings.Join(append(slices.Clone(path), f.Name), ".")
			keys = append(keys, Key{Name: name, Env: envName(name), Command: c, Flag: f})
		})
		for _, sub := range c.Commands() {
			walk(sub, append(slices.Clone(path), sub.Name()))
		}
	}
	walk(root, nil)

	seen := map[string]string{}
	claim := func(id, what string) error {
		if prev, ok := seen[id]; ok {
			return fmt.Errorf("config: %s and %s are both %s", prev, what, id)
		}
		seen[id] = what
		return nil
	}
	for t := range tableNames(keys) {
		if err := claim("key "+t, "table ["+t+"]"); err != nil {
			return nil, err
		}
	}
	for _, k := range keys {
		if err := claim("key "+k.Name, "flag --"+k.Flag.Name+" of "+k.Command.CommandPath()); err != nil {
			return nil, err
		}
		if err := claim("variable "+k.Env, "flag --"+k.Flag.Name+" of "+k.Command.CommandPath()); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// skipped reports whether c is one of cobra's own commands (help,
// completion, the hidden __complete) or annotated to be skipped.
func skipped(c *cobra.Command) bool {
	if c.Annotations[Annotation] == "skip" || strings.HasPrefix(c.Name(), "__") {
		return true
	}
	if c.HasParent() && !c.Parent().HasParent() && (c.Name() == "help" || c.Name() == "completion") {
		return true
	}
	return false
}

// Builtin reports whether cmd is one of cobra's own commands (help,
// completion and its subcommands, __complete), which need no configuration.
func Builtin(cmd *cobra.Command) bool {
	for c := cmd; c != nil && c.HasParent(); c = c.Parent() {
		if skipped(c) && c.Annotations[Annotation] != "skip" {
			return true
		}
	}
	return false
}

func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// tableNames is every command path that holds keys, and their prefixes.
func tableNames(keys []Key) map[string]bool {
	t := map[string]bool{}
	for _, k := range keys {
		parts := strings.Split(k.Name, ".")
		for i := 1; i < len(parts); i++ {
			t[strings.Join(parts[:i], ".")] = true
		}
	}
	return t
}

// Load checks root's tree and reads file. A missing file is no error unless
// required (it was named by --config or NIXIPFS_CONFIG); file "" is none.
// Every key in the file must name a flag of the tree, with a value of the
// flag's type. lookupEnv is os.LookupEnv outside tests.
func Load(root *cobra.Command, file string, required bool, lookupEnv func(string) (string, bool)) (*Config, error) {
	keys, err := Keys(root)
	if err != nil {
		return nil, err
	}
	c := &Config{
		keys: keys, byName: map[string]Key{}, byFlag: map[*pflag.Flag]Key{}, tables: tableNames(keys),
		values: map[string]any{}, lookup: lookupEnv, sources: map[*pflag.Flag]Source{},
	}
	for _, k := range keys {
		c.byName[k.Name], c.byFlag[k.Flag] = k, k
	}
	if file == "" {
		return c, nil
	}
	var doc map[string]any
	if _, err := toml.DecodeFile(file, &doc); err != nil {
		if errors.Is(err, fs.ErrNotExist) && !required {
			return c, nil
		}
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	c.file = file
	if err := c.check(nil, doc); err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return c, nil
}

// File is the config file that was read ("" when none was).
func (c *Config) File() string { return c.file }

// check walks a decoded table, recording values by key.
func (c *Config) check(path []string, table map[string]any) error {
	names := make([]string, 0, len(table))
	for n := range table {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		v := table[n]
		name := strings.Join(append(slices.Clone(path), n), ".")
		if k, ok := c.byName[name]; ok {
			if _, err := fileStrings(k, v); err != nil {
				return fmt.Errorf("key %s: %w", name, err)
			}
			c.values[name] = v
			continue
		}
		if c.tables[name] {
			sub, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("key %s: is a command, want a table [%s]", name, name)
			}
			if err := c.check(append(slices.Clone(path), n), sub); err != nil {
				return err
			}
			continue
		}
		return fmt.Errorf("unknown key %q%s", name, c.suggest(n))
	}
	return nil
}

// suggest names keys with the same last part, for a key put in the wrong
// table.
func (c *Config) suggest(last string) string {
	var alts []string
	for _, k := range c.keys {
		if k.Flag.Name == last {
			alts = append(alts, k.Name)
		}
	}
	if len(alts) == 0 {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", strings.Join(alts, " or "))
}

// isList reports whether f takes a list (a repeatable flag).
func isList(f *pflag.Flag) bool {
	_, ok := f.Value.(pflag.SliceValue)
	return ok
}

// fileStrings turns a TOML value into the strings to set k's flag to,
// checking that its TOML type fits the flag's type.
func fileStrings(k Key, v any) ([]string, error) {
	if isList(k.Flag) {
		items, ok := v.([]any)
		if !ok {
			items = []any{v} // one value for a list is a list of one
		}
		out := make([]string, 0, len(items))
		for _, it := range items {
			s, err := scalar(k.Flag, elemType(k.Flag.Value.Type()), it)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := scalar(k.Flag, k.Flag.Value.Type(), v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

// elemType is the element type of a pflag slice type ("stringArray" →
// "string", "intSlice" → "int").
func elemType(t string) string {
	t = strings.TrimSuffix(strings.TrimSuffix(t, "Slice"), "Array")
	return t
}

func scalar(f *pflag.Flag, typ string, v any) (string, error) {
	switch typ {
	case "bool":
		if b, ok := v.(bool); ok {
			return fmt.Sprint(b), nil
		}
		return "", fmt.Errorf("want true or false, got %s", describe(v))
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "count":
		if n, ok := v.(int64); ok {
			return fmt.Sprint(n), nil
		}
		return "", fmt.Errorf("want an integer, got %s", describe(v))
	case "float32", "float64":
		switch n := v.(type) {
		case int64, float64:
			return fmt.Sprint(n), nil
		}
		return "", fmt.Errorf("want a number, got %s", describe(v))
	case "duration":
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf(`want a duration string such as "10s", got %s`, describe(v))
		}
		if _, err := time.ParseDuration(s); err != nil {
			return "", err
		}
		return s, nil
	}
	if s, ok := v.(string); ok {
		return s, nil
	}
	return "", fmt.Errorf("want a string, got %s", describe(v))
}

func describe(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	case string:
		return fmt.Sprintf("the string %q", v)
	}
	return fmt.Sprintf("%T %v", v, v)
}

// envStrings splits a variable's value for f: lists are comma-separated.
func envStrings(f *pflag.Flag, v string) ([]string, error) {
	if !isList(f) {
		return []string{v}, nil
	}
	r := csv.NewReader(strings.NewReader(v))
	r.TrimLeadingSpace = true
	fields, err := r.Read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range fields {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// Apply sets the flags of cmd (its own and those it inherits) that were not
// given on the command line: from the environment, else from the file.
func (c *Config) Apply(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if k, ok := c.byFlag[f]; ok {
			errs = append(errs, c.apply(k))
		}
	})
	return errors.Join(errs...)
}

func (c *Config) apply(k Key) error {
	f := k.Flag
	if _, done := c.sources[f]; done {
		return nil
	}
	if f.Changed {
		c.sources[f] = Source{Kind: "flag"}
		return nil
	}
	// An empty variable counts as unset, as `NIXIPFS_X= nixipfs ...` means.
	if v, ok := c.lookup(k.Env); ok && v != "" {
		vals, err := envStrings(f, v)
		if err == nil {
			err = set(f, vals)
		}
		if err != nil {
			return fmt.Errorf("%s=%q: %w", k.Env, v, err)
		}
		c.sources[f] = Source{Kind: "env", Name: k.Env}
		return nil
	}
	if v, ok := c.values[k.Name]; ok {
		vals, err := fileStrings(k, v)
		if err == nil {
			err = set(f, vals)
		}
		if err != nil {
			return fmt.Errorf("config %s: key %s: %w", c.file, k.Name, err)
		}
		c.sources[f] = Source{Kind: "file", Name: c.file}
		return nil
	}
	c.sources[f] = Source{Kind: "default"}
	return nil
}

// set gives f its values and marks it changed, as the command line would
// (so required-flag checks count a configured flag as given).
func set(f *pflag.Flag, vals []string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		if err := sv.Replace(vals); err != nil {
			return err
		}
	} else if err := f.Value.Set(vals[0]); err != nil {
		return err
	}
	f.Changed = true
	return nil
}

// Source says where the running command's flag f got its value (after
// Apply): "flag" for the command line. The zero Source for flags that are
// not keys.
func (c *Config) Source(f *pflag.Flag) Source { return c.sources[f] }

// Setting is a key's effective value and where it came from.
type Setting struct {
	Key     string `json:"key"`
	Env     string `json:"env"`
	Type    string `json:"type"`
	Value   any    `json:"value"`
	Default string `json:"default"`
	Source  string `json:"source"`
	Usage   string `json:"usage"`
}

// Settings applies the environment and file to every flag of the tree and
// returns each key's value. It changes the flags of commands that are not
// running, so call it only from a command that reports settings.
func (c *Config) Settings() ([]Setting, error) {
	var errs []error
	out := make([]Setting, 0, len(c.keys))
	for _, k := range c.keys {
		errs = append(errs, c.apply(k))
		out = append(out, Setting{
			Key: k.Name, Env: k.Env, Type: typeName(k.Flag), Value: Typed(k.Flag),
			Default: k.Flag.DefValue, Source: c.sources[k.Flag].String(), Usage: k.Flag.Usage,
		})
	}
	return out, errors.Join(errs...)
}

// Typed is f's current value as a TOML-typed Go value: bool, int64,
// float64, []string or string.
func Typed(f *pflag.Flag) any {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		if s := sv.GetSlice(); s != nil {
			return s
		}
		return []string{}
	}
	return parseTyped(f.Value.Type(), f.Value.String())
}

func parseTyped(typ, s string) any {
	var v any = s
	switch typeName0(typ) {
	case "bool", "integer", "number":
		// TOML's own parser reads a bare scalar of these types.
		var doc map[string]any
		if _, err := toml.Decode("v = "+s, &doc); err == nil {
			v = doc["v"]
		}
	}
	return v
}

// typeName is the reference's name for f's type.
func typeName(f *pflag.Flag) string {
	if isList(f) {
		return "list of " + typeName0(elemType(f.Value.Type()))
	}
	return typeName0(f.Value.Type())
}

func typeName0(t string) string {
	switch t {
	case "bool", "duration", "string":
		return t
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "count":
		return "integer"
	case "float32", "float64":
		return "number"
	}
	return "string"
}
