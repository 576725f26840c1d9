package ipldnar
import ("testing";"bytes")
func TestDbg(t *testing.T) {
	valid := encodeNAR(dir(
		ent("bin", dir(ent("x", exe([]byte("exe-contents"))), ent("y", link("x")))),
		ent("big", file(data3_5MiB[:MiB+5])),
		ent("empty", dir()),
		ent("f", file([]byte("0123456789"))),
	))
	t.Log(len(valid), bytes.Index(valid, data3_5MiB[:64]))
}
