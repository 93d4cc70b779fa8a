// Command vcsim serves VMware's vSphere simulator (govmomi's simulator package) on the
// loopback interface, for snaptree's ESX backend tests.
//
// Debian's golang-github-vmware-govmomi-dev ships the simulator package but no vcsim
// command, so the project carries this one. It builds in GOPATH mode against Debian's
// packages, with no module download:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode:$TMP go build -o vcsim .
//
// It prints, one record a line, then keeps serving until stdin closes or a signal comes
// (so a test that dies takes the simulator with it):
//
//	URL http://127.0.0.1:PORT/sdk
//	CERT /path/cert.pem            (with -tls and -cert-out)
//	VM <name> <moid> <power state>  (one line per virtual machine)
//	READY
//
// The password is read from $VCSIM_PASSWORD (default "pass"), not from the command line,
// so that it does not show in process listings.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"sort"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	esx := flag.Bool("esx", false, "simulate a standalone ESX host instead of a vCenter")
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (port 0: any free port)")
	user := flag.String("user", "user", "the only user name the simulator accepts")
	useTLS := flag.Bool("tls", false, "serve https with the simulator's self-signed certificate")
	certOut := flag.String("cert-out", "", "with -tls: write the server certificate (PEM) to this file")
	flag.Parse()

	password := os.Getenv("VCSIM_PASSWORD")
	if password == "" {
		password = "pass"
	}

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	}
	if err := model.Create(); err != nil {
		fail("cannot create the simulator model: %v", err)
	}
	defer model.Remove()

	// A user other than simulator.DefaultLogin makes the simulator check the password;
	// with the default it accepts any non-empty one, and bad credentials could not be tested.
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, password)}
	if *useTLS {
		// Not the simulator's built-in certificate: its 1024-bit RSA key is refused by
		// OpenSSL 3 at Debian's default security level ("EE certificate key too weak").
		cert, err := selfSigned()
		if err != nil {
			fail("cannot make a certificate: %v", err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	server := model.Service.NewServer()
	defer server.Close()
	// Set before the URL is printed: no client can have connected yet.
	server.Server.Config.Handler = rootRemovalFix(server.Server.Config.Handler)

	u := *server.URL
	u.User = nil
	fmt.Printf("URL %s\n", u.String())
	if *useTLS && *certOut != "" {
		block := &pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw}
		if err := os.WriteFile(*certOut, pem.EncodeToMemory(block), 0o644); err != nil {
			fail("cannot write the certificate: %v", err)
		}
		fmt.Printf("CERT %s\n", *certOut)
	}

	var vms []string
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		vms = append(vms, fmt.Sprintf("VM %s %s %s", vm.Name, vm.Self.Value, vm.Runtime.PowerState))
	}
	sort.Strings(vms)
	for _, line := range vms {
		fmt.Println(line)
	}
	fmt.Println("READY")

	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-done:
	case <-signals:
	}
}

var removeSnapshotThis = regexp.MustCompile(`<RemoveSnapshot_Task[^>]*>\s*<_this[^>]*>([^<]+)</_this>`)

// rootRemovalFix works around a simulator bug: RemoveSnapshot_Task of the VM's current
// snapshot when that snapshot is a root and other snapshots remain sets
// snapshot.currentSnapshot to a nil pointer, and the property update panics (the
// connection closes with no reply). vSphere then has no current snapshot; this wrapper
// clears it first, so the simulator takes its working path.
func rootRemovalFix(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Body != nil {
			body, err := io.ReadAll(r.Body)
			_ = r.Body.Close()
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if m := removeSnapshotThis.FindSubmatch(body); m != nil {
				clearRootCurrent(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: string(m[1])})
			}
		}
		next.ServeHTTP(w, r)
	})
}

func clearRootCurrent(snapshot types.ManagedObjectReference) {
	s, ok := simulator.Map.Get(snapshot).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	vm, ok := simulator.Map.Get(s.Vm).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot == nil || vm.Snapshot.CurrentSnapshot == nil || *vm.Snapshot.CurrentSnapshot != snapshot {
			return
		}
		for _, root := range vm.Snapshot.RootSnapshotList {
			if root.Snapshot == snapshot {
				vm.Snapshot.CurrentSnapshot = nil
				return
			}
		}
	})
}

// selfSigned makes a P-256 certificate for the loopback addresses, its own CA.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim for snaptree tests"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim: "+format+"\n", args...)
	os.Exit(1)
}
