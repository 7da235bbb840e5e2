package logfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func readAll(t *testing.T, path string, since time.Time) []string {
	t.Helper()
	var out []string
	if _, err := ReadSince(path, 0, since, func(l Line) error {
		out = append(out, l.Text)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLinesAreStampedAndJoined(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	w, err := Open(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	fmt.Fprint(w, "one\ntw")
	fmt.Fprint(w, "o\r\nthree")
	w.Close()
	got := readAll(t, path, time.Time{})
	if strings.Join(got, "|") != "one|two|three" {
		t.Fatalf("lines %q", got)
	}
	b, _ := os.ReadFile(path)
	l := parse(strings.SplitN(string(b), "\n", 2)[0])
	if l.Time.Before(before) || l.Time.After(time.Now()) || l.Text != "one" {
		t.Fatalf("stored line %q parses to %+v", b, l)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestRotationKeepsSizeAndOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	w, err := Open(path, 1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		fmt.Fprintf(w, "line %03d\n", i)
	}
	w.Close()
	for _, p := range []string{path, path + ".1", path + ".2"} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > 1000 {
			t.Fatalf("%s: %v, size %d", p, err, fi.Size())
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Fatal("kept a third rotated file")
	}
	got := readAll(t, path, time.Time{})
	if len(got) == 0 || len(got) >= 100 || got[len(got)-1] != "line 099" {
		t.Fatalf("read %d lines ending %q", len(got), got[len(got)-1])
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order: %q then %q", got[i-1], got[i])
		}
	}
}

func TestReadSince(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	w, _ := Open(path, 0, 0)
	fmt.Fprintln(w, "old")
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	fmt.Fprintln(w, "new")
	w.Close()
	if got := readAll(t, path, mid); len(got) != 1 || got[0] != "new" {
		t.Fatalf("since: %q", got)
	}
}

func TestFollowSeesNewLinesAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	w, _ := Open(path, 200, 2)
	fmt.Fprintln(w, "before")
	off, err := ReadSince(path, 2, time.Time{}, func(Line) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, path, 2, off, func(l Line) error {
			mu.Lock()
			got = append(got, l.Text)
			mu.Unlock()
			return nil
		})
	}()
	for i := range 20 {
		fmt.Fprintf(w, "follow %02d\n", i)
		time.Sleep(30 * time.Millisecond)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	w.Close()
	if len(got) != 20 || got[0] != "follow 00" || got[19] != "follow 19" {
		t.Fatalf("followed %d lines: %q", len(got), got)
	}
}
