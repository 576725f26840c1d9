package test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/nixtest"
)

// configShow runs `nixipfs config show --json` with env and returns
// key → (value, source).
func configShow(t *testing.T, env []string, args ...string) (string, map[string]struct {
	Value  any
	Source string
}) {
	t.Helper()
	out := run(t, env, nixipfsBin, append([]string{"config", "show", "--json"}, args...)...)
	var doc struct {
		File     string
		Read     bool
		Settings []struct {
			Key    string
			Value  any
			Source string
		}
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("config show --json: %v\n%s", err, out)
	}
	m := map[string]struct {
		Value  any
		Source string
	}{}
	for _, s := range doc.Settings {
		m[s.Key] = struct {
			Value  any
			Source string
		}{s.Value, s.Source}
	}
	if !doc.Read {
		doc.File = ""
	}
	return doc.File, m
}

// startDaemonEnv starts `nixipfs daemon` with only env and the config file
// to configure it, and returns its gateway URL once it serves.
func startDaemonEnv(t *testing.T, env []string) string {
	t.Helper()
	cmd := exec.Command(nixipfsBin, "daemon")
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlc := make(chan string, 1)
	exited := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if u, ok := strings.CutPrefix(sc.Text(), "nixipfs: gateway on "); ok {
				urlc <- u
			}
		}
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { stop(cmd, exited) })
	select {
	case u := <-urlc:
		return u
	case <-exited:
		t.Fatalf("daemon exited:\n%s", log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon did not start:\n%s", log.String())
	}
	return ""
}

// TestConfigCLI configures the real binary through the default config file
// ($XDG_CONFIG_HOME/nixipfs/config.toml), --config, $NIXIPFS_CONFIG and
// variables, and checks the precedence and the sources config show reports.
func TestConfigCLI(t *testing.T) {
	xdg := t.TempDir()
	file := filepath.Join(xdg, "nixipfs", "config.toml")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, []byte(`
log-format = "json"
[daemon]
listen = "127.0.0.1:0"
priority = 17
peer = ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"]
[manifest.history]
limit = 5
`))
	dataDir := filepath.Join(t.TempDir(), "from-env")
	env := []string{"XDG_CONFIG_HOME=" + xdg, "NIXIPFS_DATA_DIR=" + dataDir, "NIXIPFS_DAEMON_PRIORITY=", "NIXIPFS_CONFIG="}

	t.Run("show", func(t *testing.T) {
		got, m := configShow(t, append(env, "NIXIPFS_MANIFEST_HISTORY_LIMIT=9"), "--log-format", "text")
		if got != file {
			t.Fatalf("config show read %q, want %s", got, file)
		}
		for key, want := range map[string]struct {
			value  any
			source string
		}{
			"log-format":             {"text", "flag"},
			"data-dir":               {dataDir, "env NIXIPFS_DATA_DIR"},
			"daemon.listen":          {"127.0.0.1:0", "file " + file},
			"daemon.priority":        {17.0, "file " + file}, // JSON numbers
			"manifest.history.limit": {9.0, "env NIXIPFS_MANIFEST_HISTORY_LIMIT"},
			"daemon.keep-served":     {true, "default"},
			"daemon.follow-interval": {"1s", "default"},
		} {
			if s := m[key]; s.Value != want.value || s.Source != want.source {
				t.Errorf("%s = %v from %q, want %v from %q", key, s.Value, s.Source, want.value, want.source)
			}
		}
		if p := m["daemon.peer"].Value.([]any); len(p) != 1 {
			t.Errorf("daemon.peer = %v", p)
		}
	})

	t.Run("explicit-file", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.toml")
		writeFile(t, other, []byte("[daemon]\npriority = 3\n"))
		got, m := configShow(t, env, "--config", other)
		if got != other || m["daemon.priority"].Value != 3.0 || m["daemon.listen"].Source != "default" {
			t.Fatalf("--config %s: read %q, priority %v, listen from %s", other, got, m["daemon.priority"].Value, m["daemon.listen"].Source)
		}
		got, m = configShow(t, append(env, "NIXIPFS_CONFIG="+other))
		if got != other || m["daemon.priority"].Value != 3.0 {
			t.Fatalf("NIXIPFS_CONFIG=%s: read %q, priority %v", other, got, m["daemon.priority"].Value)
		}
		missing := filepath.Join(t.TempDir(), "missing.toml")
		if _, stderr, err := runErr(env, nixipfsBin, "--config", missing, "config", "show"); err == nil || !strings.Contains(stderr, missing) {
			t.Fatalf("--config of a missing file: %v %s", err, stderr)
		}
	})

	// The daemon takes its data dir from the environment and its listen
	// address and nix-cache-info priority from the file.
	t.Run("daemon", func(t *testing.T) {
		gw := startDaemonEnv(t, env)
		if info := string(get(t, gw+"/nix-cache-info")); !strings.Contains(info, "Priority: 17\n") {
			t.Fatalf("nix-cache-info does not have the configured priority:\n%s", info)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "api")); err != nil {
			t.Fatalf("the daemon does not use the data dir from NIXIPFS_DATA_DIR: %v", err)
		}
	})

	// A bad key stops every command before it does anything, naming the
	// key and the file.
	t.Run("bad-key", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.toml")
		writeFile(t, bad, []byte("[daemon]\nlisten = \"127.0.0.1:0\"\nlisen = \"127.0.0.1:1\"\n"))
		fresh := filepath.Join(t.TempDir(), "never-created")
		_, stderr, err := runErr([]string{"NIXIPFS_DATA_DIR=" + fresh}, nixipfsBin, "--config", bad, "daemon")
		if err == nil || !strings.Contains(stderr, `unknown key "daemon.lisen"`) || !strings.Contains(stderr, bad) {
			t.Fatalf("bad key: %v\n%s", err, stderr)
		}
		if _, err := os.Stat(fresh); err == nil {
			t.Fatal("the daemon created its data dir despite the bad config")
		}
		_, stderr, err = runErr([]string{"NIXIPFS_DAEMON_PRIORITY=high"}, nixipfsBin, "--data-dir", fresh, "daemon")
		if err == nil || !strings.Contains(stderr, "NIXIPFS_DAEMON_PRIORITY") {
			t.Fatalf("bad variable: %v\n%s", err, stderr)
		}
		if _, err := os.Stat(fresh); err == nil {
			t.Fatal("the daemon created its data dir despite the bad variable")
		}
	})
}

// TestKeysGenerate: the key pair `nixipfs keys generate` writes is one the
// real Nix signs with and verifies against, and it is never overwritten.
func TestKeysGenerate(t *testing.T) {
	nixEnv(t)
	dir := t.TempDir()
	pubOut := strings.TrimSpace(run(t, nil, nixipfsBin, "keys", "generate", "--out", dir, "test.example.org-1"))
	sec, pub := filepath.Join(dir, "test.example.org-1.sec"), filepath.Join(dir, "test.example.org-1.pub")
	for p, mode := range map[string]os.FileMode{sec: 0o600, pub: 0o644} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", p, st.Mode().Perm(), mode)
		}
	}
	pubKey := string(readFile(t, pub))
	if pubOut != pubKey || !strings.HasPrefix(pubKey, "test.example.org-1:") {
		t.Fatalf("printed %q, .pub holds %q", pubOut, pubKey)
	}
	// Nix derives the same public key from the secret one.
	conv := exec.Command("nix", "key", "convert-secret-to-public")
	conv.Stdin = strings.NewReader(string(readFile(t, sec)))
	if out, err := conv.Output(); err != nil || strings.TrimSpace(string(out)) != pubKey {
		t.Fatalf("nix key convert-secret-to-public: %q %v, want %q", out, err, pubKey)
	}

	// A locally built (input-addressed) path: only a valid signature makes
	// it pass `nix store verify --sigs-needed 1`.
	store := nixtest.Store(t)
	top, _ := nixtest.BuildClosure(t, store)
	verify := func(key string) error {
		_, _, err := runErr(nil, "nix", "store", "verify", "--store", store, "--sigs-needed", "1",
			"--option", "trusted-public-keys", key, top)
		return err
	}
	if verify(pubKey) == nil {
		t.Fatal("an unsigned path verified: the check below would prove nothing")
	}
	run(t, nil, "nix", "store", "sign", "--store", store, "--key-file", sec, top)
	if err := verify(pubKey); err != nil {
		t.Fatalf("nix store verify with the generated public key: %v", err)
	}
	otherDir := t.TempDir()
	other := strings.TrimSpace(run(t, nil, nixipfsBin, "keys", "generate", "--out", otherDir, "test.example.org-1"))
	if verify(other) == nil {
		t.Fatal("the signature verified under another key of the same name")
	}

	// Never overwritten: a second run fails, naming the file, and leaves
	// both files as they were.
	before := string(readFile(t, sec))
	_, stderr, err := runErr(nil, nixipfsBin, "keys", "generate", "--out", dir, "test.example.org-1")
	if err == nil || !strings.Contains(stderr, sec) {
		t.Fatalf("second keys generate: %v\n%s", err, stderr)
	}
	if string(readFile(t, sec)) != before || string(readFile(t, pub)) != pubKey {
		t.Fatal("key files changed by a refused run")
	}
	if _, stderr, err := runErr(nil, nixipfsBin, "keys", "generate", "--out", dir, "bad:name"); err == nil || !strings.Contains(stderr, "bad:name") {
		t.Fatalf("bad name: %v\n%s", err, stderr)
	}
}

// TestCompletion sources the generated completion scripts in the real
// bash (with bash-completion), zsh and fish and completes a command and a
// flag through them.
func TestCompletion(t *testing.T) {
	path := "PATH=" + filepath.Dir(nixipfsBin) + ":" + os.Getenv("PATH")
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if _, err := exec.LookPath(shell); err != nil {
			t.Fatalf("%s is needed for this test (scripts/install-deps installs it): %v", shell, err)
		}
	}
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("the bash-completion package is needed: %v", err)
	}
	scripts := map[string]string{}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		f := filepath.Join(t.TempDir(), "nixipfs."+shell)
		writeFile(t, f, []byte(run(t, nil, nixipfsBin, "completion", shell)))
		scripts[shell] = f
	}
	// Each prints the completions of "nixipfs da" and "nixipfs daemon --li",
	// one per line.
	drivers := map[string][]string{
		"bash": {"bash", "-c", `source ` + bashCompletion + `; source "$1"
complete_line() { COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
  __start_nixipfs nixipfs "${@: -1}" 2>/dev/null; printf '%s\n' "${COMPREPLY[@]}"; }
complete_line nixipfs da; complete_line nixipfs daemon --li`, "bash", scripts["bash"]},
		// zsh: compinit registers the script for nixipfs; its completer is
		// then called with words/CURRENT set as the line editor would, and
		// _describe/compadd print what they would offer.
		"zsh": {"zsh", "-f", "-c", `autoload -U compinit; compinit -u -D; source "$1"
[[ $_comps[nixipfs] == _nixipfs ]] || { print "not registered: $_comps[nixipfs]"; exit 1 }
_describe() { print -rl -- "${(@P)2%%:*}" } ; compadd() { print -rl -- "$@" }
words=(nixipfs da); CURRENT=2; _nixipfs; words=(nixipfs daemon --li); CURRENT=3; _nixipfs`, "zsh", scripts["zsh"]},
		"fish": {"fish", "-c", `source $argv[1]; complete -C "nixipfs da"; complete -C "nixipfs daemon --li"`, scripts["fish"]},
	}
	for shell, argv := range drivers {
		t.Run(shell, func(t *testing.T) {
			out := run(t, []string{path, "HOME=" + t.TempDir()}, argv[0], argv[1:]...)
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				got = append(got, strings.SplitN(line, "\t", 2)[0]) // fish: "word\tdescription"
			}
			if strings.Join(got, " ") != "daemon --listen" {
				t.Fatalf("%s completes %q, want [daemon --listen]\n%s", shell, got, out)
			}
		})
	}
}
