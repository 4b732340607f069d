package healthdns

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/coredns/caddy"
	"go.uber.org/goleak"
)

// TestReloadNotify: a reload keeps the notify targets whose line stays, stops those whose line
// went and starts the new ones; a reload that fails at listen starts none for good; shutdown
// stops every target and the stall watchdog, with their goroutines.
func TestReloadNotify(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // registered first, so it runs last

	receiver := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(receiver.Close)
	port := listenTCP(t, 0, "127.0.14.60")
	dnsPort := freeUDPPort(t)
	block := func(paths ...string) string {
		b := fmt.Sprintf("healthdns app.lan notify.lan {\n backend 127.0.14.60\n check tcp %d\n interval 100ms\n timeout 50ms\n", port)
		for _, p := range paths {
			b += fmt.Sprintf(" notify http %s/%s\n", receiver.URL, p)
		}
		return b + " }"
	}
	running := func(want int, when string) {
		t.Helper()
		if got := proc.notify.Running(); got != want {
			t.Fatalf("%s: %d notify targets running, want %d", when, got, want)
		}
	}

	inst, err := caddy.Start(corefile(dnsPort, block("a", "b")))
	if err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)  // before a reload: caddy's servers start after Start returns
	running(4, "after start") // two lines, two zones
	if inst, err = inst.Restart(corefile(dnsPort, block("a", "c"))); err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)
	running(4, "after a reload that replaced b with c")

	busy := listenTCP(t, 0, "127.0.0.1")
	bad := corefile(dnsPort, block("a", "c", "d")).(caddy.CaddyfileInput)
	bad.Contents = append(bad.Contents, fmt.Sprintf("tcp://.:%d {\n bind 127.0.0.1\n whoami\n}\n", busy)...)
	if _, err := inst.Restart(bad); err == nil {
		t.Fatal("reload onto a busy port succeeded")
	}
	running(4, "after a reload that failed at listen")
	// As TestReload does, a good reload after the failed one, so that the servers of the
	// instance it left are the ones shutdown waits for.
	if inst, err = inst.Restart(corefile(dnsPort, block("c"))); err != nil {
		t.Fatal(err)
	}
	awaitServing(t, dnsPort)
	running(2, "after a reload that kept c alone")

	if errs := inst.ShutdownCallbacks(); len(errs) != 0 {
		t.Fatal(errs)
	}
	inst.Stop()
	inst.Wait()
	running(0, "after shutdown")
}
