package test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthdns/healthdns/client"
	"github.com/healthdns/healthdns/test/harness"
)

// apiFleet is two healthdns servers following one etcd prefix, each with a status listener
// that takes writes: the zone api.lan. from etcd, with the Corefile's own backend fixed.
type apiFleet struct {
	servers   []*harness.Server
	status    []string // their listeners' addresses
	token     string
	tokenFile string
}

const apiFleetToken = "fleet-api-s3cret-0123456789"

func startAPIFleet(t *testing.T, fixed string, etcdBackends ...string) *apiFleet {
	t.Helper()
	port, _ := harness.StartBackends(t, append([]string{fixed}, etcdBackends...)...)
	etcd := harness.StartEtcd(t)
	kv := etcd.Client(t)
	for _, ip := range etcdBackends[:1] {
		put(t, kv, "/healthdns/api.lan/"+ip, "")
	}
	f := &apiFleet{token: apiFleetToken, tokenFile: filepath.Join(t.TempDir(), "token")}
	if err := os.WriteFile(f.tokenFile, []byte(f.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		addr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
		conf := ".:{{PORT}} {\n bind 127.0.0.1\n" +
			etcdPool("api.lan", etcd.Endpoint(), port, "backend "+fixed, "status "+addr+" token "+f.tokenFile) + "}\n"
		f.servers = append(f.servers, harness.Start(t, conf))
		f.status = append(f.status, addr)
	}
	return f
}

func (f *apiFleet) client(t *testing.T, i int) *client.Client {
	t.Helper()
	c, err := client.New(f.status[i], client.WithToken(f.token), client.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// answered waits until every server answers api.lan. with ips.
func (f *apiFleet) answered(t *testing.T, what string, ips ...string) {
	t.Helper()
	start := time.Now()
	for i, s := range f.servers {
		harness.Eventually(t, 10*time.Second, func() bool {
			return harness.SameSet(s.Addrs(t, "udp", "api.lan.", dns.TypeA), ips...)
		}, "server ", i+1, ": ", what, ": want ", ips)
	}
	t.Logf("%s: both servers answer it after %s", what, time.Since(start).Round(time.Millisecond))
}

// TestBackendsAPI: a backend added through server A's API is answered by both servers; a write
// with a stale If-Match is refused with the current value and changes nothing; a backend of the
// Corefile is refused, saying where it is listed; a removal through server B reaches both. The
// log names the caller of each write.
func TestBackendsAPI(t *testing.T) {
	harness.RequireEtcd(t)
	t.Parallel()
	const fixed, first, added = "127.0.15.1", "127.0.15.2", "127.0.15.3"
	f := startAPIFleet(t, fixed, first, added)
	ctx := context.Background()
	a, b := f.client(t, 0), f.client(t, 1)
	f.answered(t, "the first list", fixed, first)

	set, err := a.SetBackend(ctx, "api.lan", added, client.BackendRequest{Weight: 3}, 0)
	if err != nil {
		t.Fatalf("adding %s through server A: %v", added, err)
	}
	if !set.OK || set.Key != "/healthdns/api.lan/"+added || *set.Value != "weight 3" || set.Revision == 0 || set.Weight != 3 {
		t.Errorf("the add answered %+v; want the key /healthdns/api.lan/%s = 'weight 3' and its revision", set, added)
	}
	f.answered(t, "a backend added through server A's API", fixed, first, added)
	harness.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(f.servers[0].Output(), "backend "+added+": set to 'weight 3' by 127.0.0.1:")
	}, "the write logged with its caller")

	// Server B reads the same key, at the same revision.
	got, err := b.Backend(ctx, "api.lan.", added)
	if err != nil || got.Revision != set.Revision || got.Weight != 3 {
		t.Fatalf("server B reads %+v, %v; want revision %d, weight 3", got, err, set.Revision)
	}

	// A console that read before another's change writes on a stale revision: refused with
	// what is there now, and nothing changes.
	changed, err := b.SetBackend(ctx, "api.lan.", added, client.BackendRequest{Weight: 3, Priority: 200}, set.Revision)
	if err != nil {
		t.Fatalf("changing the priority through server B: %v", err)
	}
	f.answered(t, "priority 200 through server B", added)
	_, err = a.SetBackend(ctx, "api.lan.", added, client.BackendRequest{Weight: 9}, set.Revision)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusConflict || ce.Code != "stale_revision" || ce.Current == nil ||
		ce.Current.Revision != changed.Revision || ce.Current.Priority != 200 {
		t.Fatalf("a write on a stale revision: %#v; want 409 stale_revision with the current value (revision %d, priority 200)", err, changed.Revision)
	}
	if now, err := a.Backend(ctx, "api.lan.", added); err != nil || now.Revision != changed.Revision || *now.Value != "weight 3 priority 200" {
		t.Errorf("after the stale write the key is %+v, %v; want it unchanged at revision %d", now, err, changed.Revision)
	}
	// Adding what exists is a stale write too.
	if _, err := a.SetBackend(ctx, "api.lan.", added, client.BackendRequest{}, 0); !client.IsCode(err, "stale_revision") {
		t.Errorf("adding a backend that exists: %v; want stale_revision", err)
	}

	// The Corefile's backend is not the API's to write.
	_, err = a.SetBackend(ctx, "api.lan.", fixed, client.BackendRequest{Weight: 2}, 0)
	if !errors.As(err, &ce) || ce.Status != http.StatusConflict || ce.Code != "read_only" || !strings.Contains(ce.Message, "listed by its backend line in the Corefile") {
		t.Errorf("writing the Corefile's backend: %v; want 409 read_only saying it is a backend line of the Corefile", err)
	}

	// A removal through B, on the revision it read.
	if _, err := b.RemoveBackend(ctx, "api.lan.", added, set.Revision); !client.IsCode(err, "stale_revision") {
		t.Errorf("removing on a stale revision: %v; want stale_revision", err)
	}
	if _, err := b.RemoveBackend(ctx, "api.lan.", added, changed.Revision); err != nil {
		t.Fatalf("removing %s through server B: %v", added, err)
	}
	f.answered(t, "a backend removed through server B's API", fixed, first)
	if _, err := a.Backend(ctx, "api.lan.", added); !client.IsCode(err, "backend_not_found") {
		t.Errorf("reading a removed backend: %v; want backend_not_found", err)
	}

	// Each write is an event on the server that took it, naming its caller; each server's list
	// says what came and went (a change of weight or priority is no list event).
	want := map[int][]string{
		0: {"backend_set " + added + " 'weight 3' api 127.0.0.1:", "backend_added " + added, "backend_removed " + added},
		1: {"backend_added " + added, "backend_set " + added + " 'weight 3 priority 200' api 127.0.0.1:",
			"backend_deleted " + added + " 'weight 3 priority 200' api 127.0.0.1:", "backend_removed " + added},
	}
	for i, c := range []*client.Client{a, b} {
		var got []string
		streamCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c.Events(streamCtx, 0, func(e client.Event) error {
			if e.Backend != added {
				return nil
			}
			line := string(e.Kind) + " " + e.Backend
			if e.Kind == "backend_set" || e.Kind == "backend_deleted" {
				line += " '" + e.Value + "' " + e.By
			}
			got = append(got, line)
			if len(got) == len(want[i]) {
				cancel()
			}
			return nil
		})
		cancel()
		// The write's event and the list's race (the watch may deliver first): order aside,
		// each wanted event once.
		ok := len(got) == len(want[i])
		for _, w := range want[i] {
			ok = ok && slices.IndexFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) >= 0
		}
		if !ok {
			t.Errorf("server %d's events of %s: %q, want %q (each by its prefix, in any order)", i+1, added, got, want[i])
		}
	}
}
