package netlab

import (
	"os"
	"path/filepath"
	"testing"
)

// The key of a build changes with what the binary is built from, and only with that: a test
// file's change must not cost a link, and a source's change must not reuse a stale binary.
func TestSourceKey(t *testing.T) {
	root := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key := func(toolchain string) string {
		t.Helper()
		k, err := sourceKey(root, toolchain)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write("go.mod", "module example\n")
	write("pool.go", "package x\n")
	write("status.html", "<p>page</p>\n")
	write("pool_test.go", "package x\n")
	write(".git/HEAD", "ref: refs/heads/main\n")
	base := key("go1.26")
	if again := key("go1.26"); again != base {
		t.Fatalf("the same tree gave keys %s and %s", base, again)
	}
	for _, c := range []struct {
		name, file, content string
		same                bool
	}{
		{"a test file", "pool_test.go", "package x // changed\n", true},
		{"git's files", ".git/HEAD", "ref: refs/heads/other\n", true},
		{"a source file", "pool.go", "package x // changed\n", false},
		{"an embedded page", "status.html", "<p>other</p>\n", false},
		{"a new source file", "sub/new.go", "package sub\n", false},
	} {
		write(c.file, c.content)
		got := key("go1.26")
		if (got == base) != c.same {
			t.Errorf("%s changed: key %s, was %s; want the same key: %v", c.name, got, base, c.same)
		}
		base = got
	}
	if key("go1.27") == base {
		t.Error("another toolchain gave the same key")
	}
}
