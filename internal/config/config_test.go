package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// vals are what the test tree's flags end up as.
type vals struct {
	dataDir  string
	verbose  bool
	listen   string
	peers    []string
	priority int
	interval time.Duration
	keep     bool
	lsJSON   bool
	manJSON  bool
	ran      string
}

// tree builds a small command tree shaped like nixipfs's: global flags, a
// command with flags of every kind, a nested command and a persistent flag
// on a non-root command. Its root loads file (required when given as
// required) and applies it with env before any command runs.
func tree(v *vals, file string, required bool, env map[string]string) *cobra.Command {
	lookup := func(k string) (string, bool) { s, ok := env[k]; return s, ok }
	root := &cobra.Command{
		Use: "nixipfs", SilenceErrors: true, SilenceUsage: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			c, err := Load(cmd.Root(), file, required, lookup)
			if err != nil {
				return err
			}
			return c.Apply(cmd)
		},
	}
	root.PersistentFlags().StringVar(&v.dataDir, "data-dir", "/default/data", "data directory")
	root.PersistentFlags().BoolVarP(&v.verbose, "verbose", "v", false, "debug logging")
	run := func(name string) func(*cobra.Command, []string) {
		return func(*cobra.Command, []string) { v.ran = name }
	}
	daemon := &cobra.Command{Use: "daemon", Run: run("daemon")}
	f := daemon.Flags()
	f.StringVar(&v.listen, "listen", "127.0.0.1:8080", "listen address")
	f.StringArrayVar(&v.peers, "peer", nil, "peer (repeatable)")
	f.IntVar(&v.priority, "priority", 30, "priority | lower wins")
	f.DurationVar(&v.interval, "follow-interval", time.Second, "interval")
	f.BoolVar(&v.keep, "keep-served", true, "keep")
	follow := &cobra.Command{Use: "follow"}
	ls := &cobra.Command{Use: "ls", Run: run("follow ls")}
	ls.Flags().BoolVar(&v.lsJSON, "json", false, "print JSON")
	follow.AddCommand(ls)
	manifest := &cobra.Command{Use: "manifest"}
	manifest.PersistentFlags().BoolVar(&v.manJSON, "json", false, "print JSON")
	manifest.AddCommand(&cobra.Command{Use: "show", Run: run("manifest show")})
	root.AddCommand(daemon, follow, manifest)
	return root
}

func execute(t *testing.T, file string, env map[string]string, args ...string) (*vals, error) {
	t.Helper()
	v := &vals{}
	root := tree(v, file, false, env)
	root.SetArgs(args)
	err := root.Execute()
	return v, err
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeys(t *testing.T) {
	keys, err := Keys(tree(&vals{}, "", false, nil))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.Name+"="+k.Env)
	}
	want := []string{
		"data-dir=NIXIPFS_DATA_DIR", "verbose=NIXIPFS_VERBOSE",
		"daemon.follow-interval=NIXIPFS_DAEMON_FOLLOW_INTERVAL", "daemon.keep-served=NIXIPFS_DAEMON_KEEP_SERVED",
		"daemon.listen=NIXIPFS_DAEMON_LISTEN", "daemon.peer=NIXIPFS_DAEMON_PEER", "daemon.priority=NIXIPFS_DAEMON_PRIORITY",
		"follow.ls.json=NIXIPFS_FOLLOW_LS_JSON", "manifest.json=NIXIPFS_MANIFEST_JSON",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("keys:\n got %q\nwant %q", got, want)
	}
}

func TestKeysCollide(t *testing.T) {
	// --follow-ls-json on the root and [follow.ls] json share a variable.
	root := tree(&vals{}, "", false, nil)
	root.PersistentFlags().Bool("follow-ls-json", false, "")
	if _, err := Keys(root); err == nil || !strings.Contains(err.Error(), "NIXIPFS_FOLLOW_LS_JSON") {
		t.Fatalf("colliding variable: %v", err)
	}
	// A root flag named like a command is both a key and a table.
	root = tree(&vals{}, "", false, nil)
	root.PersistentFlags().String("daemon", "", "")
	if _, err := Keys(root); err == nil || !strings.Contains(err.Error(), "key daemon") {
		t.Fatalf("flag named like a table: %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeConfig(t, `
data-dir = "/from/file"
[daemon]
listen = "file:1"
priority = 10
peer = ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"]
follow-interval = "3s"
keep-served = false
`)
	env := map[string]string{"NIXIPFS_DAEMON_LISTEN": "env:1", "NIXIPFS_DAEMON_PRIORITY": "20"}

	// default < file
	v, err := execute(t, file, nil, "daemon")
	if err != nil {
		t.Fatal(err)
	}
	if v.dataDir != "/from/file" || v.listen != "file:1" || v.priority != 10 || v.interval != 3*time.Second || v.keep ||
		!reflect.DeepEqual(v.peers, []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"}) {
		t.Fatalf("file values not applied: %+v", v)
	}
	// file < env
	v, err = execute(t, file, env, "daemon")
	if err != nil {
		t.Fatal(err)
	}
	if v.listen != "env:1" || v.priority != 20 || v.dataDir != "/from/file" {
		t.Fatalf("env does not beat the file: %+v", v)
	}
	// env < flag; a flag given replaces the list rather than adding to it.
	v, err = execute(t, file, env, "daemon", "--listen", "flag:1", "--peer", "/ip4/127.0.0.1/tcp/9")
	if err != nil {
		t.Fatal(err)
	}
	if v.listen != "flag:1" || v.priority != 20 || !reflect.DeepEqual(v.peers, []string{"/ip4/127.0.0.1/tcp/9"}) {
		t.Fatalf("flag does not beat env and file: %+v", v)
	}
	// No file, no env: defaults.
	v, err = execute(t, "", nil, "daemon")
	if err != nil {
		t.Fatal(err)
	}
	if v.listen != "127.0.0.1:8080" || v.priority != 30 || !v.keep || v.peers != nil || v.dataDir != "/default/data" {
		t.Fatalf("defaults: %+v", v)
	}
}

func TestEnvLists(t *testing.T) {
	v, err := execute(t, "", map[string]string{
		"NIXIPFS_DAEMON_PEER": "/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2",
		"NIXIPFS_VERBOSE":     "1",
		"NIXIPFS_DATA_DIR":    "", // empty counts as unset
	}, "daemon")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v.peers, []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"}) || !v.verbose || v.dataDir != "/default/data" {
		t.Fatalf("env: %+v", v)
	}
}

func TestNestedAndInherited(t *testing.T) {
	file := writeConfig(t, "[follow.ls]\njson = true\n[manifest]\njson = true\n")
	v, err := execute(t, file, nil, "follow", "ls")
	if err != nil || !v.lsJSON || v.ran != "follow ls" {
		t.Fatalf("[follow.ls] json: %+v %v", v, err)
	}
	// A persistent flag of manifest reaches its subcommands under its
	// declaring command's key.
	v, err = execute(t, file, nil, "manifest", "show")
	if err != nil || !v.manJSON || v.ran != "manifest show" {
		t.Fatalf("[manifest] json on manifest show: %+v %v", v, err)
	}
	v, err = execute(t, "", map[string]string{"NIXIPFS_MANIFEST_JSON": "true"}, "manifest", "show")
	if err != nil || !v.manJSON {
		t.Fatalf("NIXIPFS_MANIFEST_JSON on manifest show: %+v %v", v, err)
	}
}

func TestSingleValueForList(t *testing.T) {
	v, err := execute(t, writeConfig(t, "[daemon]\npeer = \"/ip4/127.0.0.1/tcp/1\"\n"), nil, "daemon")
	if err != nil || !reflect.DeepEqual(v.peers, []string{"/ip4/127.0.0.1/tcp/1"}) {
		t.Fatalf("peer as one string: %+v %v", v, err)
	}
}

func TestBadFile(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"[daemon]\nlisen = \"x\"\n", `unknown key "daemon.lisen"`},
		{"listen = \"x\"\n", `unknown key "listen" (did you mean daemon.listen?)`},
		{"[deamon]\nlisten = \"x\"\n", `unknown key "deamon"`},
		{"daemon = \"x\"\n", "key daemon: is a command, want a table [daemon]"},
		{"[daemon]\npriority = \"10\"\n", `key daemon.priority: want an integer, got the string "10"`},
		{"[daemon]\nkeep-served = \"yes\"\n", `key daemon.keep-served: want true or false`},
		{"[daemon]\nfollow-interval = 3\n", `key daemon.follow-interval: want a duration string`},
		{"[daemon]\nfollow-interval = \"3 parsecs\"\n", `key daemon.follow-interval: time: unknown unit`},
		{"[daemon]\nlisten = [\"a\"]\n", `key daemon.listen: want a string, got a list`},
		{"[daemon]\npeer = [1]\n", `key daemon.peer: want a string`},
		{"[daemon\nlisten = 1\n", "toml: line "},
	} {
		file := writeConfig(t, tc.text)
		v, err := execute(t, file, nil, "follow", "ls") // any command checks the whole file
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), file) {
			t.Errorf("%q: got error %v, want one naming %s and %q", tc.text, err, file, tc.want)
		}
		if v.ran != "" {
			t.Errorf("%q: the command ran despite the bad file", tc.text)
		}
	}
}

func TestBadEnv(t *testing.T) {
	_, err := execute(t, "", map[string]string{"NIXIPFS_DAEMON_PRIORITY": "high"}, "daemon")
	if err == nil || !strings.Contains(err.Error(), `NIXIPFS_DAEMON_PRIORITY="high"`) {
		t.Fatalf("bad variable: %v", err)
	}
	// Variables of other commands are not read.
	if _, err := execute(t, "", map[string]string{"NIXIPFS_DAEMON_PRIORITY": "high"}, "follow", "ls"); err != nil {
		t.Fatalf("another command's variable: %v", err)
	}
}

func TestMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.toml")
	if _, err := execute(t, missing, nil, "daemon"); err != nil {
		t.Fatalf("a missing default file is no error: %v", err)
	}
	v := &vals{}
	root := tree(v, missing, true, nil)
	root.SetArgs([]string{"daemon"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("a missing named file: %v", err)
	}
}

// TestSettingsRoundTrip: settings report value and source, and what
// WriteTOML prints is a config file giving the same values.
func TestSettingsRoundTrip(t *testing.T) {
	file := writeConfig(t, "[daemon]\npriority = 10\npeer = [\"/ip4/127.0.0.1/tcp/1\", \"a \\\"quoted\\\" one\"]\n")
	env := map[string]string{"NIXIPFS_DAEMON_LISTEN": "env:1"}
	lookup := func(k string) (string, bool) { s, ok := env[k]; return s, ok }
	root := tree(&vals{}, "", false, nil)
	c, err := Load(root, file, true, lookup)
	if err != nil {
		t.Fatal(err)
	}
	settings, err := c.Settings()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Setting{}
	for _, s := range settings {
		got[s.Key] = s
	}
	check := func(key string, value any, source string) {
		t.Helper()
		s := got[key]
		if !reflect.DeepEqual(s.Value, value) || s.Source != source {
			t.Errorf("%s: %#v from %q, want %#v from %q", key, s.Value, s.Source, value, source)
		}
	}
	check("daemon.priority", int64(10), "file "+file)
	check("daemon.listen", "env:1", "env NIXIPFS_DAEMON_LISTEN")
	check("daemon.keep-served", true, "default")
	check("daemon.follow-interval", "1s", "default")
	check("daemon.peer", []string{"/ip4/127.0.0.1/tcp/1", `a "quoted" one`}, "file "+file)
	check("follow.ls.json", false, "default")

	var out bytes.Buffer
	if err := WriteTOML(&out, settings); err != nil {
		t.Fatal(err)
	}
	again := writeConfig(t, out.String())
	c2, err := Load(tree(&vals{}, "", false, nil), again, true, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("WriteTOML's output is not a valid config file: %v\n%s", err, out.String())
	}
	settings2, err := c2.Settings()
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range settings2 {
		if !reflect.DeepEqual(s.Value, settings[i].Value) || s.Source != "file "+again {
			t.Errorf("round trip of %s: %#v from %s, want %#v", s.Key, s.Value, s.Source, settings[i].Value)
		}
	}
}

func TestReference(t *testing.T) {
	root := tree(&vals{}, "", false, nil)
	root.PersistentFlags().SetAnnotation("data-dir", DefaultText, []string{"$XDG_DATA_HOME/nixipfs"})
	keys, err := Keys(root)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteReference(&out, keys); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"| `data-dir` | `NIXIPFS_DATA_DIR` | string | `$XDG_DATA_HOME/nixipfs` | data directory |",
		"| `daemon.peer` | `NIXIPFS_DAEMON_PEER` | list of string | `[]` | peer (repeatable) |",
		"| `daemon.priority` | `NIXIPFS_DAEMON_PRIORITY` | integer | `30` | priority \\| lower wins |",
		"| `daemon.listen` | `NIXIPFS_DAEMON_LISTEN` | string | `\"127.0.0.1:8080\"` | listen address |",
		"| `daemon.follow-interval` | `NIXIPFS_DAEMON_FOLLOW_INTERVAL` | duration | `\"1s\"` | interval |",
	} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("reference lacks %s\n%s", line, out.String())
		}
	}
}

func TestBuiltinAndSkip(t *testing.T) {
	root := tree(&vals{}, "", false, nil)
	cfg := &cobra.Command{Use: "config", Annotations: map[string]string{Annotation: "skip"}}
	show := &cobra.Command{Use: "show"}
	show.Flags().Bool("json", false, "")
	cfg.AddCommand(show)
	comp := &cobra.Command{Use: "completion"}
	bash := &cobra.Command{Use: "bash"}
	bash.Flags().Bool("no-descriptions", false, "")
	comp.AddCommand(bash)
	root.AddCommand(cfg, comp)
	keys, err := Keys(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.HasPrefix(k.Name, "config.") || strings.HasPrefix(k.Name, "completion.") {
			t.Errorf("key %s of a skipped command", k.Name)
		}
	}
	if !Builtin(bash) || Builtin(show) || Builtin(root) {
		t.Errorf("Builtin: bash %v, config show %v, root %v", Builtin(bash), Builtin(show), Builtin(root))
	}
}
