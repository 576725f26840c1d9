package config

import (
	"encoding/csv"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// WriteTOML writes settings as a config file, one table per command, each
// value followed by a comment saying where it came from. The output is a
// valid config file.
func WriteTOML(w io.Writer, settings []Setting) error {
	var b strings.Builder
	table := ""
	for _, s := range settings {
		t, name := splitKey(s.Key)
		if t != table {
			fmt.Fprintf(&b, "\n[%s]\n", t)
			table = t
		}
		fmt.Fprintf(&b, "%s = %s  # %s\n", name, tomlValue(s.Value), s.Source)
	}
	_, err := io.WriteString(w, strings.TrimPrefix(b.String(), "\n"))
	return err
}

// splitKey splits "a.b.c" into table "a.b" and name "c".
func splitKey(key string) (string, string) {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return "", key
}

// tomlValue renders a value Typed returns.
func tomlValue(v any) string {
	switch v := v.(type) {
	case string:
		return tomlString(v)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = tomlString(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return fmt.Sprint(v)
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// defaultValue is f's default as it would be written in the file, or its
// DefaultText annotation.
func defaultValue(f *pflag.Flag) string {
	if t := f.Annotations[DefaultText]; len(t) > 0 {
		return t[0]
	}
	if isList(f) {
		inner := strings.TrimSuffix(strings.TrimPrefix(f.DefValue, "["), "]")
		var items []string
		if inner != "" {
			if rec, err := csv.NewReader(strings.NewReader(inner)).Read(); err == nil {
				items = rec
			} else {
				items = []string{inner}
			}
		}
		return tomlValue(append([]string{}, items...))
	}
	return tomlValue(parseTyped(f.Value.Type(), f.DefValue))
}

// WriteReference writes the Markdown table of every key: its variable,
// type, default and meaning.
func WriteReference(w io.Writer, keys []Key) error {
	var b strings.Builder
	b.WriteString("| key | environment variable | type | default | meaning |\n")
	b.WriteString("|---|---|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, k := range keys {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | `%s` | %s |\n",
			k.Name, k.Env, typeName(k.Flag), cell(defaultValue(k.Flag)), cell(k.Flag.Usage))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
