package healthdns

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"

	"github.com/healthdns/healthdns/event"
	"github.com/healthdns/healthdns/notify"
)

func TestParseNotify(t *testing.T) {
	script := filepath.Join(t.TempDir(), "on-event")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	token := writeToken(t, testToken)
	lines := "notify exec " + script + " {zone} {event} --verbose timeout 3s events backend_down group_switched\n" +
		" notify http http://127.0.0.1:9000/hook token " + token + "\n" +
		" notify http https://hooks.example/h events all_down"
	cfgs, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+lines+"\n}"))
	if err != nil {
		t.Fatal(err)
	}
	want := []notify.Target{
		{Channel: notify.Exec, Path: script, Args: []string{"{zone}", "{event}", "--verbose"}, Timeout: 3 * time.Second, Kinds: []event.Kind{event.BackendDown, event.GroupSwitched}},
		{Channel: notify.HTTP, URL: "http://127.0.0.1:9000/hook", Token: testToken, Timeout: notify.DefaultTimeout},
		{Channel: notify.HTTP, URL: "https://hooks.example/h", Timeout: notify.DefaultTimeout, Kinds: []event.Kind{event.AllDown}},
	}
	if got := cfgs[0].notify; !reflect.DeepEqual(got, want) {
		t.Errorf("parsed\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseNotifyErrors(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "on-event")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, line, want string }{
		{"bare", "notify", "want 'notify exec PATH"},
		{"no path", "notify exec", "want 'notify exec PATH"},
		{"channel", "notify mail root@localhost", "unknown notify channel 'mail'"},
		{"missing script", "notify exec " + dir + "/nothing", "notify exec " + dir + "/nothing: stat"},
		{"not executable", "notify exec " + plain, plain + " is not an executable file"},
		{"relative URL", "notify http /hook", "notify http '/hook': want an http:// or https:// URL"},
		{"other scheme", "notify http ftp://127.0.0.1/", "want an http:// or https:// URL"},
		{"unknown kind", "notify http http://127.0.0.1:9/ events backend_up backend_sideways", "unknown event kind 'backend_sideways'; want backend_up, backend_down"},
		{"no kind", "notify exec " + script + " events", "'events' wants at least one KIND"},
		{"token on exec", "notify exec " + script + " x timeout 1s token " + script, "unknown notify exec option 'token'"},
		{"token missing", "notify http http://127.0.0.1:9/ token " + dir + "/nothing", "notify http token: open"},
		{"bad timeout", "notify http http://127.0.0.1:9/ timeout 1ms", "invalid notify timeout '1ms'"},
		{"timeout twice", "notify http http://127.0.0.1:9/ timeout 1s timeout 2s", "'timeout' given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(caddy.NewTestController("dns", "healthdns app.lan {\n backend 10.0.0.1\n "+tc.line+"\n}"))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), ":3 - ") {
				t.Errorf("%s: error %v, want one at line 3 saying %q", tc.line, err, tc.want)
			}
		})
	}
}
