package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// module is one module directory of the Go module cache.
type module struct {
	dir      string // absolute
	path     string // module path, unescaped
	version  string
	requires []string // module paths from its go.mod
	deps     []int    // indexes of selected modules it references
	name     string   // derivation name
}

// mkw2 writes W2: one derivation per module directory of the Go module cache
// (a copy of the tree) that references the derivations of the modules its
// go.mod requires, plus an index derivation referencing all of them. The
// closure of the index is W2. Requirement cycles are broken (Nix needs a DAG)
// by dropping the edge that closes the cycle.
func mkw2(args []string) error {
	fl := flag.NewFlagSet("mkw2", flag.ExitOnError)
	modroot := fl.String("modroot", "", "Go module cache (GOMODCACHE)")
	bb := fl.String("bb", "", "directory holding bin/{sh,cp,chmod,echo} of a static busybox")
	limit := fl.Int("limit", 0, "at most this many modules (0: all)")
	list := fl.String("modules", "", "only the modules (path@version, one a line, # comments) of this file, every one of which must be in the cache")
	out := fl.String("o", "", "output .nix file")
	_ = fl.Parse(args)
	if *modroot == "" || *bb == "" || *out == "" {
		return errors.New("-modroot, -bb and -o are required")
	}
	mods, err := findModules(*modroot)
	if err != nil {
		return err
	}
	if len(mods) == 0 {
		return fmt.Errorf("no module directories under %s", *modroot)
	}
	if *list != "" {
		if mods, err = listedModules(mods, *list); err != nil {
			return err
		}
	}
	mods = selectModules(mods, *limit)
	edges := link(mods)
	order := topoOrder(mods)

	var b strings.Builder
	fmt.Fprintf(&b, `# W2 for scripts/bench, written by benchtool mkw2: %d modules of %s, %d references.
let
  bb = builtins.path { path = %s; name = "busybox"; };
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "${bb}/bin/sh";
    args = [ "-c" script ];
    PATH = "${bb}/bin";
  };
  mod = name: path: deps: mk name ''
    cp -r ${builtins.path { inherit path; name = "src-" + name; }} $out
    chmod -R u+w $out
    echo ${toString deps} > $out/.nix-deps
  '';
`, len(mods), *modroot, edges, nixPath(*bb))
	for _, i := range order {
		m := mods[i]
		var deps []string
		for _, d := range m.deps {
			deps = append(deps, fmt.Sprintf("m%d", d))
		}
		fmt.Fprintf(&b, "  m%d = mod %s %s [ %s ];\n", i, nixString(m.name), nixPath(m.dir), strings.Join(deps, " "))
	}
	b.WriteString("  all = [")
	for i := range mods {
		fmt.Fprintf(&b, " m%d", i)
	}
	b.WriteString(" ];\nin mk \"w2-index\" ''echo ${toString all} > $out''\n")
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "w2: %d modules, %d references between them, plus an index\n", len(mods), edges)
	return nil
}

// findModules lists the module directories (name@version) under root,
// skipping the download cache.
func findModules(root string) ([]*module, error) {
	var mods []*module
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() || p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "cache" {
			return filepath.SkipDir
		}
		at := strings.LastIndex(rel, "@")
		if at < 0 {
			return nil
		}
		m := &module{dir: p, path: unescape(rel[:at]), version: rel[at+1:]}
		m.requires = requires(filepath.Join(p, "go.mod"))
		mods = append(mods, m)
		return filepath.SkipDir
	})
	slices.SortFunc(mods, func(a, b *module) int {
		return strings.Compare(a.path+"@"+a.version, b.path+"@"+b.version)
	})
	return mods, err
}

// listedModules keeps the modules named in the file list, so that W2 is
// the same on every machine and stays so as the module cache grows.
func listedModules(mods []*module, list string) ([]*module, error) {
	b, err := os.ReadFile(list)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			want[line] = true
		}
	}
	var kept []*module
	for _, m := range mods {
		if want[m.path+"@"+m.version] {
			kept = append(kept, m)
			delete(want, m.path+"@"+m.version)
		}
	}
	if len(want) > 0 {
		missing := slices.Sorted(maps.Keys(want))
		return nil, fmt.Errorf("%s: %d modules are not in the module cache (go mod download them): %s", list, len(missing), strings.Join(missing, " "))
	}
	return kept, nil
}

// unescape undoes the module cache's case encoding ("!x" is "X").
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '!' && i+1 < len(s) {
			i++
			b.WriteString(strings.ToUpper(s[i : i+1]))
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// requires reads the required module paths of a go.mod (none if absent).
func requires(gomod string) []string {
	f, err := os.Open(gomod)
	if err != nil {
		return nil
	}
	defer f.Close()
	var reqs []string
	block := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		fields := strings.Fields(line)
		switch {
		case block && len(fields) > 0 && fields[0] == ")":
			block = false
		case block && len(fields) >= 2:
			reqs = append(reqs, strings.Trim(fields[0], `"`))
		case len(fields) >= 2 && fields[0] == "require" && fields[1] == "(":
			block = true
		case len(fields) >= 3 && fields[0] == "require":
			reqs = append(reqs, strings.Trim(fields[1], `"`))
		}
	}
	return reqs
}

// selectModules keeps at most limit modules that require each other: a
// breadth-first walk of requirements from the module with the most
// requirements present, then from the next such module, and so on.
func selectModules(mods []*module, limit int) []*module {
	if limit <= 0 || limit >= len(mods) {
		return mods
	}
	byPath := map[string][]*module{}
	for _, m := range mods {
		byPath[m.path] = append(byPath[m.path], m)
	}
	present := func(m *module) int {
		n := 0
		for _, r := range m.requires {
			if len(byPath[r]) > 0 {
				n++
			}
		}
		return n
	}
	chosen := map[*module]bool{}
	var picked []*module
	for len(picked) < limit {
		var root *module
		for _, m := range mods {
			if !chosen[m] && (root == nil || present(m) > present(root)) {
				root = m
			}
		}
		queue := []*module{root}
		chosen[root] = true
		for len(queue) > 0 && len(picked) < limit {
			m := queue[0]
			queue = queue[1:]
			picked = append(picked, m)
			for _, r := range m.requires {
				if c := byPath[r]; len(c) > 0 && !chosen[c[len(c)-1]] {
					chosen[c[len(c)-1]] = true
					queue = append(queue, c[len(c)-1])
				}
			}
		}
	}
	slices.SortFunc(picked, func(a, b *module) int {
		return strings.Compare(a.path+"@"+a.version, b.path+"@"+b.version)
	})
	return picked
}

// link resolves each module's requirements to selected modules (the last
// version present when the cache holds several) and names the derivations; it
// returns the number of references.
func link(mods []*module) int {
	byPath := map[string][]int{}
	for i, m := range mods {
		byPath[m.path] = append(byPath[m.path], i)
		m.name = storeName(fmt.Sprintf("w2-%03d-%s-%s", i, m.path, m.version))
	}
	for i, m := range mods {
		seen := map[int]bool{}
		for _, r := range m.requires {
			c := byPath[r]
			if len(c) == 0 {
				continue
			}
			d := c[len(c)-1]
			if d != i && !seen[d] {
				seen[d] = true
				m.deps = append(m.deps, d)
			}
		}
	}
	// Break cycles: drop edges to modules on the current DFS stack.
	state := make([]int, len(mods)) // 0 new, 1 on stack, 2 done
	var visit func(i int)
	visit = func(i int) {
		state[i] = 1
		kept := mods[i].deps[:0]
		for _, d := range mods[i].deps {
			if state[d] == 1 {
				continue
			}
			if state[d] == 0 {
				visit(d)
			}
			kept = append(kept, d)
		}
		mods[i].deps = kept
		state[i] = 2
	}
	edges := 0
	for i := range mods {
		if state[i] == 0 {
			visit(i)
		}
	}
	for _, m := range mods {
		edges += len(m.deps)
	}
	return edges
}

// topoOrder lists modules dependencies first (the let bindings do not need
// it, but it makes the file readable).
func topoOrder(mods []*module) []int {
	done := make([]bool, len(mods))
	var order []int
	var visit func(i int)
	visit = func(i int) {
		if done[i] {
			return
		}
		done[i] = true
		for _, d := range mods[i].deps {
			visit(d)
		}
		order = append(order, i)
	}
	for i := range mods {
		visit(i)
	}
	return order
}

// storeName maps s to the characters Nix allows in store path names.
func storeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '+', c == '-', c == '.', c == '_', c == '?', c == '=':
		default:
			b[i] = '-'
		}
	}
	if len(b) > 180 {
		b = b[:180]
	}
	return string(b)
}

func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `${`, `\${`)
	return `"` + r.Replace(s) + `"`
}

// nixPath is a path value for any absolute path, even one with characters a
// path literal cannot hold (the module cache has '@' and '!').
func nixPath(p string) string {
	return "(/. + " + nixString(p) + ")"
}
