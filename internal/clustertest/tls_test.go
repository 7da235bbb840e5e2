package clustertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeCert makes a self-signed certificate for names with the given
// serial and writes it (and its key) as PEM files.
func writeCert(t *testing.T, certFile, keyFile string, serial int64, names ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	os.Rename(keyFile+".tmp", keyFile)
	os.Rename(certFile+".tmp", certFile)
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// TestTLSAndHTTP2: HTTPS with certificates chosen by SNI, HTTP/2 by ALPN
// (for Go's client, curl and h2load), redirects and HSTS per app, and a
// certificate swap on SIGHUP that loses no request in flight.
func TestTLSAndHTTP2(t *testing.T) {
	h2load, err := exec.LookPath("h2load")
	if err != nil {
		t.Fatal("h2load is missing: install Debian's nghttp2-client (.ci/run does)")
	}
	dir := t.TempDir()
	helloCrt, helloKey := filepath.Join(dir, "hello.crt"), filepath.Join(dir, "hello.key")
	otherCrt, otherKey := filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key")
	writeCert(t, helloCrt, helloKey, 1, helloHost)
	writeCert(t, otherCrt, otherKey, 2, "*.other.test")
	c := Start(t, 1, "--https", "127.0.0.1:0", "--tls-cert", helloCrt, "--tls-key", helloKey, "--tls-cert", otherCrt, "--tls-key", otherKey)
	if r := deployHello(c, c.HelloDir(nil), "--https-redirect", "--hsts"); r.Code != 0 {
		t.Fatalf("deploy: %s", r.Stderr)
	}
	httpsAddr := c.Front.Addrs["https"]
	_, port, _ := net.SplitHostPort(httpsAddr)

	client := func(serverName string) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
			},
			TLSClientConfig: &tls.Config{ServerName: serverName, InsecureSkipVerify: true},
		}}
	}
	get := func(cl *http.Client, host, path string) *http.Response {
		t.Helper()
		resp, err := cl.Get("https://" + host + ":" + port + path)
		if err != nil {
			t.Fatalf("GET https://%s%s: %v", host, path, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	resp := get(client(helloHost), helloHost, "/headers")
	var got struct{ Headers http.Header }
	json.NewDecoder(resp.Body).Decode(&got)
	if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("https: %d %s TLS %x", resp.StatusCode, resp.Proto, resp.TLS.Version)
	}
	if resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 1 || got.Headers.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("hello.test got certificate %v, app saw X-Forwarded-Proto %q", resp.TLS.PeerCertificates[0].DNSNames, got.Headers.Get("X-Forwarded-Proto"))
	}
	if resp.Header.Get("Strict-Transport-Security") != "max-age=31536000" {
		t.Errorf("HSTS: %q", resp.Header.Get("Strict-Transport-Security"))
	}
	// SNI: another name gets the wildcard certificate (and 404: no app).
	other := get(client("a.other.test"), "a.other.test", "/")
	if other.TLS.PeerCertificates[0].SerialNumber.Int64() != 2 || other.StatusCode != 404 {
		t.Errorf("a.other.test: certificate %v, status %d", other.TLS.PeerCertificates[0].DNSNames, other.StatusCode)
	}

	// Plain HTTP is redirected.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+c.Front.Addrs["http"]+"/x?y=1", nil)
	req.Host = helloHost
	r, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if want := "https://" + helloHost + ":" + port + "/x?y=1"; r.StatusCode != 308 || r.Header.Get("Location") != want {
		t.Errorf("redirect: %d %q, want 308 %q", r.StatusCode, r.Header.Get("Location"), want)
	}

	// curl speaks HTTP/2 to it too.
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(curl, "--http2", "-sk", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
			"--resolve", helloHost+":"+port+":127.0.0.1", "https://"+helloHost+":"+port+"/").Output()
		if err != nil || string(out) != "2 200" {
			t.Errorf("curl --http2: %q %v", out, err)
		}
	}

	// And h2load, under a little load: 4 connections with 4 streams each,
	// every request answered over HTTP/2. (It does not check certificates.)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, h2load, "-n", "200", "-c", "4", "-m", "4",
		"--connect-to", "127.0.0.1:"+port, "https://"+helloHost+":"+port+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("h2load: %v\n%s", err, out)
	}
	for _, want := range []string{"Application protocol: h2\n", "requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed", "status codes: 200 2xx"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("h2load's report lacks %q:\n%s", want, out)
		}
	}

	// A certificate swap on SIGHUP, with a request in flight on an open
	// HTTP/2 connection.
	slowClient := client(helloHost)
	done := make(chan string, 1)
	go func() {
		resp, err := slowClient.Get("https://" + helloHost + ":" + port + "/sleep?ms=1500")
		if err != nil {
			done <- err.Error()
			return
		}
		resp.Body.Close()
		done <- resp.Status
	}()
	time.Sleep(300 * time.Millisecond)
	writeCert(t, helloCrt, helloKey, 3, helloHost)
	if err := c.Front.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var serial int64
	if !Eventually(5*time.Second, func() bool {
		cl := client(helloHost)
		defer cl.CloseIdleConnections()
		resp, err := cl.Get("https://" + helloHost + ":" + port + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		serial = resp.TLS.PeerCertificates[0].SerialNumber.Int64()
		return serial == 3
	}) {
		t.Fatalf("after SIGHUP new connections get certificate serial %d, want 3", serial)
	}
	if s := <-done; !strings.HasPrefix(s, "200") {
		t.Fatalf("request in flight across the certificate swap: %s", s)
	}
}
