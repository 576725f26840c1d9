package test

import (
	"bytes"
	"encoding/binary"
)

// A tiny NAR encoder for hostile inputs: it writes whatever it is told,
// including what a correct encoder would refuse.

type narNode func(*bytes.Buffer)

func str(b *bytes.Buffer, s string) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	b.Write(n[:])
	b.WriteString(s)
	if pad := (8 - len(s)%8) % 8; pad > 0 {
		b.Write(make([]byte, pad))
	}
}

func file(content string, exec bool) narNode {
	return func(b *bytes.Buffer) {
		str(b, "(")
		str(b, "type")
		str(b, "regular")
		if exec {
			str(b, "executable")
			str(b, "")
		}
		str(b, "contents")
		str(b, content)
		str(b, ")")
	}
}

func symlink(target string) narNode {
	return func(b *bytes.Buffer) {
		str(b, "(")
		str(b, "type")
		str(b, "symlink")
		str(b, "target")
		str(b, target)
		str(b, ")")
	}
}

type narEntry struct {
	name string
	node narNode
}

func entry(name string, n narNode) narEntry { return narEntry{name, n} }

func dir(entries ...narEntry) narNode {
	return func(b *bytes.Buffer) {
		str(b, "(")
		str(b, "type")
		str(b, "directory")
		for _, e := range entries {
			str(b, "entry")
			str(b, "(")
			str(b, "name")
			str(b, e.name)
			str(b, "node")
			e.node(b)
			str(b, ")")
		}
		str(b, ")")
	}
}

func narOf(n narNode) []byte {
	var b bytes.Buffer
	str(&b, "nix-archive-1")
	n(&b)
	return b.Bytes()
}

type hostile struct {
	name string
	nar  []byte
	want string // a piece of the error message
}

func hostileNARs() []hostile {
	good := narOf(dir(entry("a", file("hello", false)), entry("b", symlink("a"))))
	lying := narOf(file("12345678", false))
	// Make the content length claim more bytes than there are.
	lying[len(lying)-8-8-16] = 200
	badPad := narOf(file("abc", false))
	badPad[len(badPad)-8-8-1] = 'X'
	return []hostile{
		{"dotdot", narOf(dir(entry("..", file("x", false)))), ".."},
		{"dot", narOf(dir(entry(".", file("x", false)))), "\".\""},
		{"slash", narOf(dir(entry("a/b", file("x", false)))), "a/b"},
		{"nul", narOf(dir(entry("a\x00b", file("x", false)))), "a\\x00b"},
		{"empty name", narOf(dir(entry("", file("x", false)))), "empty"},
		{"unsorted", narOf(dir(entry("b", file("x", false)), entry("a", file("y", false)))), "\"a\""},
		{"duplicate", narOf(dir(entry("a", file("x", false)), entry("a", file("y", false)))), "\"a\""},
		{"truncated", good[:len(good)-20], "truncated"},
		{"lying size", lying, "unexpected end"},
		{"bad padding", badPad, "padding"},
		{"trailing garbage", append(append([]byte{}, good...), make([]byte, 8)...), "trailing"},
		{"bad magic", append([]byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-2\x00\x00\x00"), good[24:]...), "magic"},
	}
}
