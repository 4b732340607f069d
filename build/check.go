package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns"
)

// checkFlag is -healthdns-check: parse the Corefile (-conf, or ./Corefile) as a start would,
// print its pools or its error, and exit, starting nothing: the step before a reload.
var checkFlag = flag.Bool("healthdns-check", false, "parse the Corefile as a start would, print each healthdns pool or the error, and exit (0: it would start)")

// checkCorefile runs the check when -healthdns-check is given, and says whether it did and
// its exit code.
func checkCorefile(stdout, stderr io.Writer) (ran bool, code int) {
	flag.Parse() // coremain.Run parses again, with the same result, when this does not exit
	if !*checkFlag {
		return false, 0
	}
	// The Corefile is found as a start finds it: coremain's loaders (-conf, stdin, ./Corefile).
	cdyfile, err := caddy.LoadCaddyfile("dns")
	if err != nil {
		fmt.Fprintf(stderr, "healthdns-check: %v\n", err)
		return true, 1
	}
	pools, err := healthdns.Check(cdyfile)
	if err != nil {
		fmt.Fprintf(stderr, "healthdns-check: %s: %v\n", cdyfile.Path(), err)
		return true, 1
	}
	for _, p := range pools {
		fmt.Fprint(stdout, p)
	}
	fmt.Fprintf(stdout, "%s: ok, %d healthdns zones; nothing was started\n", cdyfile.Path(), len(pools))
	return true, 0
}
