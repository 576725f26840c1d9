package test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixipfs/nixipfs/internal/ipfsnode"
	"github.com/nixipfs/nixipfs/internal/nixtest"
	nodestatus "github.com/nixipfs/nixipfs/internal/status"
)

// Page geometry the screenshot is taken at, and the header's background
// (status.html's header rule).
const (
	shotWidth, shotHeight = 1000, 1200
	headerRows            = 60
)

var headerColor = color.RGBA{0x1d, 0x4e, 0x89, 0xff}

// chromium renders url headless and returns its DOM after load and a
// screenshot (PNG).
func chromium(t *testing.T, url string) (string, []byte) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is required for the status page test (scripts/install-deps installs it): %v", err)
	}
	dir := t.TempDir()
	shot := filepath.Join(dir, "status.png")
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=1000,1200",
		"--screenshot="+shot, "--dump-dom", url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chromium: %v\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("chromium did not finish:\n%s", stderr.String())
	}
	return stdout.String(), readFile(t, shot)
}

// elementText returns the text of the element with the given id (no
// nested elements).
func elementText(t *testing.T, dom, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("the page has no element #%s", id)
	}
	return m[1]
}

// table returns the markup of the table with the given id.
func table(t *testing.T, dom, id string) string {
	t.Helper()
	i := strings.Index(dom, `<table id="`+id+`"`)
	if i < 0 {
		t.Fatalf("the page has no table #%s", id)
	}
	j := strings.Index(dom[i:], "</table>")
	return dom[i : i+j]
}

// TestStatusPage renders node A's status page in headless Chromium. A
// published a path through its queue, follows B and is connected to it,
// and answered 3 narinfo hits and 1 miss. The DOM Chromium built must show
// all of that; the screenshot must be a real rendering of the page (its
// size, the header's background colour from our stylesheet, rows of text
// in the header and below it). The screenshot check cannot read text: the
// DOM check is what says the content is right.
func TestStatusPage(t *testing.T) {
	nixEnv(t)
	storeB := nixtest.Store(t)
	pb := addTrees(t, storeB, "from-b", 1, 100)[0]
	b := newNode(t, storeB, nil)
	b.publish(t, pb)
	db := b.daemon(t)
	nameB := b.manifestName(t)
	peerB := db.peers[0][strings.LastIndex(db.peers[0], "/")+1:]

	storeA := nixtest.Store(t)
	pa := addTrees(t, storeA, "from-a", 1, 100)[0]
	a := newNode(t, storeA, nil)
	a.nixipfs(t, "publish", "--queue", pa)
	da := a.daemon(t, "--peer", db.peers[0], "--follow", nameB)
	var rep nodestatus.Report
	waitUntil(t, "A to publish its queue and resolve B", time.Minute, func() bool {
		if err := json.Unmarshal(get(t, da.url+"/status.json"), &rep); err != nil {
			t.Fatal(err)
		}
		return rep.Queue.Waiting == 0 && len(rep.Recent) == 1 && len(rep.Followed) == 1 && rep.Followed[0].Version != ""
	})
	for range 3 {
		narinfo(t, da.url, pa)
	}
	if c := httpStatus(da.url + "/" + strings.Repeat("0", 32) + ".narinfo"); c != 404 {
		t.Fatalf("miss: %d", c)
	}
	nameA := a.manifestName(t)
	versionA, _ := a.manifestVersion(t)

	dom, shot := chromium(t, da.url+"/")
	defer func() {
		if t.Failed() {
			t.Logf("DOM:\n%s", dom)
		}
	}()

	for id, want := range map[string]string{
		"ipns": "/ipns/" + nameA, "paths": "1", "queue-waiting": "0", "queue-failed": "0",
		"followed-count": "1", "hit-rate": "75.0 %", "manifest-version": versionA,
	} {
		if got := elementText(t, dom, id); got != want {
			t.Errorf("#%s shows %q, want %q", id, got, want)
		}
	}
	if got := elementText(t, dom, "storage"); !strings.HasPrefix(got, ipfsnode.PebbleType+", ") || !strings.HasSuffix(got, " on disk") {
		t.Errorf("#storage shows %q, want the datastore and its size", got)
	}
	if got := elementText(t, dom, "peer-count"); got == "0" {
		t.Error("#peer-count shows 0; A is connected to B")
	}
	if rec := table(t, dom, "recent"); !strings.Contains(rec, pa) || !strings.Contains(rec, "published") {
		t.Errorf("recent publishes lack %s:\n%s", pa, rec)
	}
	if f := table(t, dom, "followed"); !strings.Contains(f, "/ipns/"+nameB) || !strings.Contains(f, rep.Followed[0].Version) {
		t.Errorf("followed table lacks B (%s, version %s):\n%s", nameB, rep.Followed[0].Version, f)
	}
	if !strings.Contains(dom, "/p2p/"+peerB) {
		t.Errorf("connected peers lack B (%s)", peerB)
	}
	if strings.Contains(strings.ToLower(dom), "<script") {
		t.Error("the page has a script element")
	}

	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if s := img.Bounds().Size(); s.X != shotWidth || s.Y != shotHeight {
		t.Fatalf("screenshot is %v, want %dx%d", s, shotWidth, shotHeight)
	}
	// The header band: mostly our header colour, with rows of (light) text.
	headerPx, textRows := 0, 0
	for y := range headerRows {
		light := false
		for x := range shotWidth {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			if c == headerColor {
				headerPx++
			} else if c.R > 180 && c.G > 180 && c.B > 180 {
				light = true
			}
		}
		if light {
			textRows++
		}
	}
	if share := float64(headerPx) / float64(headerRows*shotWidth); share < 0.6 {
		t.Errorf("only %.0f %% of the header band has the header colour", 100*share)
	}
	if textRows < 10 {
		t.Errorf("%d rows of the header band hold text, want at least 10", textRows)
	}
	// Below the header: rows that are not uniformly the background.
	inked := 0
	for y := headerRows + 40; y < shotHeight; y++ {
		if !uniformRow(img, y) {
			inked++
		}
	}
	if inked < 200 {
		t.Errorf("%d rows below the header hold anything, want at least 200", inked)
	}
	t.Logf("screenshot %dx%d: header colour on %.0f %% of the band, %d header rows with text, %d inked rows below",
		shotWidth, shotHeight, 100*float64(headerPx)/float64(headerRows*shotWidth), textRows, inked)
}

func uniformRow(img image.Image, y int) bool {
	first := img.At(0, y)
	for x := 1; x < img.Bounds().Dx(); x++ {
		if img.At(x, y) != first {
			return false
		}
	}
	return true
}
