package deploy

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerfile is a Dockerfile's instructions, continuation lines joined, comments dropped.
func dockerfile(text string) [][2]string {
	var out [][2]string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		ins, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, [2]string{strings.ToUpper(ins), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// The image cannot be built here (no Docker engine): this checks what can be read.
func TestDockerfile(t *testing.T) {
	instructions := dockerfile(readFile(t, "Dockerfile"))
	args := map[string]string{} // ARG defaults, for the FROM lines
	var stages []string         // image of each stage
	var last [][2]string        // instructions of the final stage
	var cgoOff, stamped bool
	argRe := regexp.MustCompile(`\$\{?(\w+)\}?`)
	for _, in := range instructions {
		switch in[0] {
		case "ARG":
			k, v, _ := strings.Cut(in[1], "=")
			if _, seen := args[k]; !seen || v != "" {
				args[k] = v
			}
		case "FROM":
			image := strings.Fields(in[1])[0]
			image = argRe.ReplaceAllStringFunc(image, func(s string) string { return args[argRe.FindStringSubmatch(s)[1]] })
			stages = append(stages, image)
			last = nil
		case "RUN":
			if strings.Contains(in[1], "go build") {
				cgoOff = strings.Contains(in[1], "CGO_ENABLED=0")
				stamped = strings.Contains(in[1], "-X main.version=")
			}
		}
		last = append(last, in)
	}
	if len(stages) < 2 {
		t.Fatalf("stages %v: want a multi-stage build", stages)
	}
	for _, image := range stages {
		if image == "scratch" {
			continue
		}
		_, tag, ok := strings.Cut(image[strings.LastIndex(image, "/")+1:], ":")
		if !ok || tag == "" || strings.HasPrefix(tag, "latest") {
			t.Errorf("image %s has no pinned tag", image)
		}
	}
	if !regexp.MustCompile(`^golang:1\.(2[5-9]|[3-9]\d)`).MatchString(stages[0]) {
		t.Errorf("builder %s: want golang:1.25 or newer (go.mod asks for 1.25)", stages[0])
	}
	if final := stages[len(stages)-1]; final != "gcr.io/distroless/static-debian12:nonroot" && final != "scratch" {
		t.Errorf("final stage %s: want distroless static nonroot or scratch", final)
	}
	if !cgoOff || !stamped {
		t.Errorf("go build: CGO_ENABLED=0 %v, version stamped %v: want both", cgoOff, stamped)
	}

	var user string
	var copies, exposes []string
	var entry string
	for _, in := range last {
		switch in[0] {
		case "USER":
			user = in[1]
		case "COPY":
			copies = append(copies, in[1])
		case "EXPOSE":
			exposes = append(exposes, strings.Fields(in[1])...)
		case "ENTRYPOINT", "CMD":
			entry += in[1] + " "
		}
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		t.Errorf("final stage runs as %q, want a non-root USER", user)
	}
	for _, p := range []string{"53/udp", "53/tcp"} {
		if !slices.Contains(exposes, p) {
			t.Errorf("EXPOSE %v lacks %s", exposes, p)
		}
	}
	var corefile bool
	for _, c := range copies {
		corefile = corefile || strings.HasSuffix(c, " /etc/coredns/Corefile")
	}
	if !corefile || !strings.Contains(entry, "/etc/coredns/Corefile") {
		t.Errorf("the Corefile is not copied to and run from /etc/coredns/Corefile (COPY %v, %s)", copies, entry)
	}
}
