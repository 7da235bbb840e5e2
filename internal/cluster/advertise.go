package cluster

import (
	"fmt"
	"net"
)

// AdvertiseIP decides the IP a member tells others to use: the operator's
// --advertise, else the IP the member binds, else the first private
// (or, failing that, any non-loopback) IPv4 address of this host, else
// loopback.
func AdvertiseIP(flag string, bindHosts ...string) (string, error) {
	if flag != "" {
		if net.ParseIP(flag) == nil {
			return "", fmt.Errorf("--advertise %q: not an IP address", flag)
		}
		return flag, nil
	}
	for _, h := range bindHosts {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
			return ip.String(), nil
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("find an address to advertise (set --advertise): %w", err)
	}
	var public string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		if ipn.IP.IsPrivate() {
			return ipn.IP.String(), nil
		}
		if public == "" {
			public = ipn.IP.String()
		}
	}
	if public != "" {
		return public, nil
	}
	return "127.0.0.1", nil
}
