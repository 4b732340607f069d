package deploy

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

const (
	rulesFile     = "deploy/prometheus/healthdns.rules.yml"
	rulesTestFile = "deploy/prometheus/healthdns.rules.test.yml"
	dashboardFile = "deploy/grafana/healthdns.json"
)

// The alerts the issue asks for; a rule file without one of them fails.
var wantAlerts = []string{
	"HealthdnsNoHealthyBackend",
	"HealthdnsBackendDown",
	"HealthdnsBackendFlapping",
	"HealthdnsProbeSlow",
	"HealthdnsServingStandby",
	"HealthdnsServingGroupsDisagree",
	"HealthdnsProbesStopped",
	"HealthdnsCheckerStalled",
	"HealthdnsDrainedTooLong",
	"HealthdnsSourceFailing",
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	if err := yaml.UnmarshalStrict([]byte(readFile(t, rulesFile)), &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

func TestAlertRules(t *testing.T) {
	rules := loadRules(t)
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
		if r.Labels["severity"] == "" {
			t.Errorf("%s: no severity label", r.Alert)
		}
		if strings.TrimSpace(r.Annotations["runbook"]) == "" {
			t.Errorf("%s: no runbook annotation", r.Alert)
		}
	}
	for _, want := range wantAlerts {
		if !slices.Contains(names, want) {
			t.Errorf("no alert %s in %s (have %v)", want, rulesFile, names)
		}
	}
	for _, r := range rules {
		if r.Alert == "HealthdnsNoHealthyBackend" && r.Labels["severity"] != "critical" {
			t.Errorf("HealthdnsNoHealthyBackend is %q, want critical", r.Labels["severity"])
		}
	}

	// Every alert must have a promtool unit test that sees it fire and one that sees it quiet.
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, rulesTestFile)), &tests); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, name := range names {
		if !fires[name] || !quiet[name] {
			t.Errorf("%s: %s tests it firing %v, quiet %v: want both", name, rulesTestFile, fires[name], quiet[name])
		}
	}

	promtool := lookTool(t, "promtool", "prometheus")
	root := repoRoot(t)
	run(t, root, nil, promtool, "check", "rules", rulesFile)
	run(t, root, nil, promtool, "test", "rules", rulesTestFile)
}

// dashboard is the part of Grafana's JSON model the tests look at.
type dashboard struct {
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Repeat      string         `json:"repeat"`
	Datasource  *datasourceRef `json:"datasource"`
	Targets     []struct {
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

func loadDashboard(t *testing.T) (dashboard, []panel) {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(readFile(t, dashboardFile)), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var flat []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			flat = append(flat, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return d, flat
}

func TestDashboard(t *testing.T) {
	d, panels := loadDashboard(t)
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "datasource" && string(v.Query) != `"prometheus"` {
			t.Errorf("variable %s: query %s, want \"prometheus\"", v.Name, v.Query)
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not query the chosen datasource: %+v", v.Name, v.Datasource)
		}
	}
	if vars["datasource"] != "datasource" || vars["zone"] != "query" {
		t.Errorf("variables %v: want a datasource variable \"datasource\" and a query variable \"zone\"", vars)
	}

	ids := map[int]string{}
	exprs := map[string]string{} // expression → panel
	for _, p := range panels {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			if q.Datasource != nil && q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: a query's datasource is %+v", p.Title, q.Datasource)
			}
			if !strings.Contains(q.Expr, `zone=~"$zone"`) && !strings.Contains(q.Expr, `zone="$zone"`) &&
				strings.Contains(q.Expr, "coredns_healthdns_backend_up") {
				t.Errorf("panel %q ignores the zone variable: %s", p.Title, q.Expr)
			}
			exprs[q.Expr] = p.Title
		}
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{
		"coredns_healthdns_backend_up",
		"coredns_healthdns_answers_total",
		"coredns_healthdns_probe_duration_seconds_bucket",
		"coredns_healthdns_probe_lateness_seconds_bucket",
		"coredns_healthdns_transitions_total",
		"coredns_healthdns_all_down_total",
	} {
		found := false
		for e := range exprs {
			found = found || strings.Contains(e, want+"{") || strings.Contains(e, want+"[")
		}
		if !found {
			t.Errorf("no panel queries %s", want)
		}
	}
	var timeline bool
	for _, p := range panels {
		timeline = timeline || (p.Type == "state-timeline" && p.Repeat == "zone")
	}
	if !timeline {
		t.Error("no state timeline of the backends repeated per zone")
	}

	// promtool parses PromQL only inside a rule file: check the panels' queries as recording
	// rules, with Grafana's variables replaced by values.
	promtool := lookTool(t, "promtool", "prometheus")
	vars2 := strings.NewReplacer("$__rate_interval", "1m", "$zone", ".*", "$instance", ".*")
	var rf strings.Builder
	rf.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	keys := make([]string, 0, len(exprs))
	for e := range exprs {
		keys = append(keys, e)
	}
	sort.Strings(keys)
	for i, e := range keys {
		q, err := json.Marshal(vars2.Replace(e)) // a JSON string is a YAML string
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&rf, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	writeFile(t, path, rf.String())
	run(t, "", nil, promtool, "check", "rules", path)
}

// ---- metric references ----

// ref is a metric that a rule or panel names, with the labels it selects or groups it by.
type ref struct {
	where  string
	metric string
	labels []string
}

var (
	metricRe   = regexp.MustCompile(`\bcoredns_\w*[a-zA-Z0-9]`)
	selectorRe = regexp.MustCompile(`\b(coredns_\w+)\s*\{([^}]*)\}`)
	matcherRe  = regexp.MustCompile(`(\w+)\s*(?:=~|!~|!=|=)`)
	// by (labels) (fn(metric...: the labels group that metric directly.
	byRe = regexp.MustCompile(`by\s*\(([^)]*)\)\s*\(\s*(?:(?:rate|irate|increase|changes|max_over_time|min_over_time)\s*\(\s*)?(coredns_\w+)`)
)

// refs finds the metrics named in text, and the labels its selectors and by clauses use.
func refs(where, text string) []ref {
	var out []ref
	for _, m := range metricRe.FindAllString(text, -1) {
		out = append(out, ref{where: where, metric: m})
	}
	for _, m := range selectorRe.FindAllStringSubmatch(text, -1) {
		r := ref{where: where, metric: m[1]}
		for _, l := range matcherRe.FindAllStringSubmatch(m[2], -1) {
			r.labels = append(r.labels, l[1])
		}
		out = append(out, r)
	}
	for _, m := range byRe.FindAllStringSubmatch(text, -1) {
		r := ref{where: where, metric: m[2]}
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				r.labels = append(r.labels, l)
			}
		}
		out = append(out, r)
	}
	return out
}

// usedRefs is every metric reference of the alert rules and the dashboard: expressions,
// annotations, panel descriptions and variable queries.
func usedRefs(t *testing.T) []ref {
	t.Helper()
	var out []ref
	for _, r := range loadRules(t) {
		out = append(out, refs("rule "+r.Alert, r.Expr)...)
		for k, v := range r.Annotations {
			out = append(out, refs("rule "+r.Alert+" annotation "+k, v)...)
		}
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(readFile(t, dashboardFile)), &raw); err != nil {
		t.Fatal(err)
	}
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case string:
			out = append(out, refs(where, v)...)
		case []any:
			for _, e := range v {
				walk(where, e)
			}
		case map[string]any:
			if title, ok := v["title"].(string); ok && v["type"] != nil {
				where = "panel " + title
			} else if name, ok := v["name"].(string); ok && v["type"] != nil {
				where = "variable " + name
			}
			for _, e := range v {
				walk(where, e)
			}
		}
	}
	walk("dashboard", raw)
	return out
}

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = []string{"instance", "job"}

// unexported says which references name a metric or a label that families lacks. A histogram
// is exported as NAME_bucket (with le), NAME_sum and NAME_count; a summary as NAME, NAME_sum
// and NAME_count.
func unexported(rs []ref, families map[string]*dto.MetricFamily) []string {
	var problems []string
	seen := map[string]bool{}
	for _, r := range rs {
		f, extra := family(r.metric, families)
		if f == nil {
			if p := fmt.Sprintf("%s: %s is not exported", r.where, r.metric); !seen[p] {
				seen[p] = true
				problems = append(problems, p)
			}
			continue
		}
		have := slices.Concat(targetLabels, extra)
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				have = append(have, l.GetName())
			}
		}
		for _, l := range r.labels {
			if p := fmt.Sprintf("%s: %s has no label %q", r.where, r.metric, l); !slices.Contains(have, l) && !seen[p] {
				seen[p] = true
				problems = append(problems, p)
			}
		}
	}
	return problems
}

func family(name string, families map[string]*dto.MetricFamily) (*dto.MetricFamily, []string) {
	if f, ok := families[name]; ok {
		if f.GetType() == dto.MetricType_HISTOGRAM {
			return nil, nil // a classic histogram has no series of its own name
		}
		return f, nil
	}
	for suffix, types := range map[string][]dto.MetricType{
		"_bucket": {dto.MetricType_HISTOGRAM},
		"_sum":    {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
		"_count":  {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
	} {
		base, ok := strings.CutSuffix(name, suffix)
		if f := families[base]; ok && f != nil && slices.Contains(types, f.GetType()) {
			if suffix == "_bucket" {
				return f, []string{"le"}
			}
			return f, nil
		}
	}
	return nil, nil
}

func parseExposition(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the metrics: %v", err)
	}
	return families
}

// The checker itself must see a metric or a label that is not there.
func TestUnexportedFindsStrays(t *testing.T) {
	families := parseExposition(t, `# TYPE coredns_healthdns_backend_up gauge
coredns_healthdns_backend_up{zone="a.",backend="10.0.0.1"} 1
# TYPE coredns_healthdns_probe_duration_seconds histogram
coredns_healthdns_probe_duration_seconds_bucket{check="tcp",le="+Inf"} 1
coredns_healthdns_probe_duration_seconds_sum{check="tcp"} 0.1
coredns_healthdns_probe_duration_seconds_count{check="tcp"} 1
`)
	good := slices.Concat(
		refs("good", `max by (job, instance, zone) (coredns_healthdns_backend_up{zone=~"$zone"}) == 0`),
		refs("good", `histogram_quantile(0.99, sum by (le, check) (rate(coredns_healthdns_probe_duration_seconds_bucket[5m])))`),
		refs("good", `coredns_healthdns_probe_duration_seconds_sum / coredns_healthdns_probe_duration_seconds_count`),
	)
	if p := unexported(good, families); len(p) > 0 {
		t.Errorf("good references reported: %v", p)
	}
	for _, bad := range []string{
		`coredns_healthdns_backend_down`,
		`coredns_healthdns_backend_up{family="ipv4"}`,
		`sum by (zone) (rate(coredns_healthdns_probe_duration_seconds_bucket[5m]))`,
		`coredns_healthdns_backend_up_bucket`,
		`coredns_healthdns_probe_duration_seconds`,
	} {
		if p := unexported(refs("bad", bad), families); len(p) == 0 {
			t.Errorf("%s: not reported", bad)
		}
	}
}
