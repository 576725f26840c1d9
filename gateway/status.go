package gateway

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/nixipfs/nixipfs/internal/status"
)

// The status page is rendered on the server by html/template (which escapes
// everything it inserts) and needs no JavaScript: a meta refresh reloads it.
//
//go:embed status.html
var statusFS embed.FS

var statusTmpl = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"bytes":   humanBytes,
	"percent": func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + " %" },
	"ago":     ago,
	"short":   short,
}).ParseFS(statusFS, "status.html"))

// statusTimeout bounds collecting a report (counting pins, reading history).
const statusTimeout = 10 * time.Second

func (g *Gateway) report(r *http.Request) *status.Report {
	ctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
	defer cancel()
	return g.cfg.Status(ctx)
}

func (g *Gateway) statusPage(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := statusTmpl.Execute(&buf, g.report(r)); err != nil {
		g.cfg.Logger.Error("status page", "err", err)
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

func (g *Gateway) statusJSON(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, g.report(r))
}

// health answers 200 when the node works (its IPFS node answers), 503 with
// the reason otherwise. Load balancers and systemd watchdogs poll it.
func (g *Gateway) health(w http.ResponseWriter, r *http.Request) {
	body := map[string]string{"status": "ok"}
	code := http.StatusOK
	if g.cfg.Health != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		err := g.cfg.Health(ctx)
		cancel()
		if err != nil {
			body = map[string]string{"status": "unhealthy", "error": err.Error()}
			code = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, r, code, body)
}

func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ago says how long before now t was, coarsely; "" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		return "in " + (-d).String()
	}
	return d.String() + " ago"
}

// short abbreviates long identifiers (CIDs, peer ids) for table cells; the
// full value stays in the cell's title.
func short(s string) string {
	if len(s) <= 20 {
		return s
	}
	return s[:10] + "…" + s[len(s)-8:]
}
