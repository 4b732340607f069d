package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one sample of a scrape, as the text format shows it: a histogram gives one Sample
// per _bucket (with its le label), one _sum and one _count.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is one scrape: the samples and the declared type of each family ("counter", "gauge",
// "histogram", ...).
type Metrics struct {
	Samples []Sample
	Types   map[string]string
}

// ScrapeURL reads and parses a Prometheus text exposition, such as the prometheus plugin's
// /metrics.
func ScrapeURL(url string) (*Metrics, error) {
	text, err := ScrapeText(url)
	if err != nil {
		return nil, err
	}
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics from %s: %w", url, err)
	}
	return m, nil
}

// ScrapeText reads a Prometheus text exposition as it is served, for a test that reads more of
// it than the samples (the help texts, say).
func ScrapeText(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", fmt.Errorf("scraping metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scraping metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("scraping metrics from %s: %w", url, err)
	}
	return string(b), nil
}

// ParseMetrics parses the Prometheus text format with Prometheus's own parser, and flattens it
// into samples the way Prometheus ingests them.
func ParseMetrics(r io.Reader) (*Metrics, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	m := &Metrics{Types: map[string]string{}}
	for name, f := range families {
		m.Types[name] = strings.ToLower(f.GetType().String())
		vector, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{}, f)
		if err != nil {
			return nil, err
		}
		for _, s := range vector {
			labels := map[string]string{}
			for k, v := range s.Metric {
				if k != model.MetricNameLabel {
					labels[string(k)] = string(v)
				}
			}
			m.Samples = append(m.Samples, Sample{Name: string(s.Metric[model.MetricNameLabel]), Labels: labels, Value: float64(s.Value)})
		}
	}
	return m, nil
}

// Matches reports whether the sample has every label of want. Zone labels are compared without
// the trailing dot: the contract does not say whether zones are exported fully qualified.
func (s Sample) Matches(want map[string]string) bool {
	for k, v := range want {
		h, ok := s.Labels[k]
		if !ok {
			return false
		}
		if k == "zone" {
			h, v = strings.TrimSuffix(h, "."), strings.TrimSuffix(v, ".")
		}
		if h != v {
			return false
		}
	}
	return true
}

// Find returns the samples of name whose labels include want.
func (m *Metrics) Find(name string, want map[string]string) []Sample {
	var out []Sample
	for _, s := range m.Samples {
		if s.Name == name && s.Matches(want) {
			out = append(out, s)
		}
	}
	return out
}

// Value returns the sum of the samples of name whose labels include want, and whether any exist.
func (m *Metrics) Value(name string, want map[string]string) (float64, bool) {
	found := m.Find(name, want)
	var sum float64
	for _, s := range found {
		sum += s.Value
	}
	return sum, len(found) > 0
}

// HTTPOK reports whether url answers 200 within a second, as the ready plugin does once every
// plugin is ready.
func HTTPOK(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
