// Command fakezfs answers the one zfs query a backup run with nothing new
// makes (zfs get type,guid,createtxg,creation -d 1 of every configured
// dataset) from a recorded listing, so that a run over hundreds of datasets
// can be timed without a pool that large. Test-only: the scale benchmark
// points backup's zfs.Runner.Cmd (zfs2s3's --zfs) at it.
//
// FAKEZFS_LISTING names a file of `zfs list -H -p -t all -o
// name,guid,createtxg,creation` lines: datasets (no '@') and snapshots.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

func main() {
	data, err := os.ReadFile(os.Getenv("FAKEZFS_LISTING"))
	if err != nil {
		fail("fakezfs: %v", err)
	}
	args := os.Args[1:]
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	// each calls fn with the fields of every line whose name passes keep.
	each := func(keep func(name string) bool, fn func(f []string)) {
		for len(data) > 0 {
			line, rest, _ := bytes.Cut(data, []byte("\n"))
			data = rest
			name, _, _ := bytes.Cut(line, []byte("\t"))
			if keep(string(name)) {
				fn(strings.Split(string(line), "\t"))
			}
		}
	}
	switch {
	case len(args) >= 9 && args[0] == "get" && args[5] == "type,guid,createtxg,creation" && args[6] == "-d" && args[7] == "1":
		want := map[string]bool{}
		for _, n := range args[8:] {
			want[n] = true
		}
		found := map[string]bool{}
		each(func(n string) bool { ds, _, _ := strings.Cut(n, "@"); return want[ds] }, func(f []string) {
			typ := "snapshot"
			if !strings.Contains(f[0], "@") {
				typ, found[f[0]] = "filesystem", true
			}
			n := f[0]
			fmt.Fprintf(w, "%s\ttype\t%s\n%s\tguid\t%s\n%s\tcreatetxg\t%s\n%s\tcreation\t%s\n", n, typ, n, f[1], n, f[2], n, f[3])
		})
		for _, n := range args[8:] {
			if !found[n] {
				w.Flush()
				fail("cannot open '%s': dataset does not exist", n)
			}
		}
	default:
		fail("fakezfs: unsupported: zfs %s", strings.Join(args, " "))
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}
