// Command mobyipvs-peer is the moby/ipvs peer of the project's library benchmark
// (integration/benches/ipvs_bulk_load.rs): what a Go user would run instead of the library.
//
//	mobyipvs-peer load N   adds N TCP services x 5 masquerading destinations
//	mobyipvs-peer list     lists the table back: the services, then each one's destinations
//
// The table is the Rust benchmark's own: service i is 198.18.0.0 + i, port 80, round robin;
// its destination j is 198.19.0.0 + 8i + j, port 8080, weight 1, masquerading. It works in the
// network namespace it is started in (the benchmark starts it in a fresh one), and prints one
// line: what it did, the moby/ipvs version it was built with, the counts, and its own time
// (from the open handle to the last reply: without the process's start-up).
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/moby/ipvs"
)

// destinations is the number of destinations per service, as in the Rust benchmark.
const destinations = 5

func ipv4(n uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, n)
	return ip
}

func service(i uint32) *ipvs.Service {
	return &ipvs.Service{
		Address:       ipv4(0xC612_0000 + i),
		Protocol:      syscall.IPPROTO_TCP,
		Port:          80,
		SchedName:     "rr",
		Netmask:       0xFFFF_FFFF,
		AddressFamily: syscall.AF_INET,
	}
}

func destination(i, j uint32) *ipvs.Destination {
	return &ipvs.Destination{
		Address:         ipv4(0xC613_0000 + i*8 + j),
		Port:            8080,
		Weight:          1,
		ConnectionFlags: ipvs.ConnectionFlagMasq,
		AddressFamily:   syscall.AF_INET,
	}
}

func load(h *ipvs.Handle, n uint32) (int, int, error) {
	services, dests := 0, 0
	for i := uint32(0); i < n; i++ {
		svc := service(i)
		if err := h.NewService(svc); err != nil {
			return services, dests, fmt.Errorf("service %d: %w", i, err)
		}
		services++
		for j := uint32(0); j < destinations; j++ {
			if err := h.NewDestination(svc, destination(i, j)); err != nil {
				return services, dests, fmt.Errorf("service %d destination %d: %w", i, j, err)
			}
			dests++
		}
	}
	return services, dests, nil
}

func list(h *ipvs.Handle) (int, int, error) {
	services, err := h.GetServices()
	if err != nil {
		return 0, 0, fmt.Errorf("services: %w", err)
	}
	dests := 0
	for _, svc := range services {
		ds, err := h.GetDestinations(svc)
		if err != nil {
			return len(services), dests, fmt.Errorf("destinations of %v:%d: %w", svc.Address, svc.Port, err)
		}
		dests += len(ds)
	}
	return len(services), dests, nil
}

// mobyVersion is the version of github.com/moby/ipvs this binary was built with.
func mobyVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/moby/ipvs" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mobyipvs-peer load N | mobyipvs-peer list")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	what := os.Args[1]
	var n uint64
	switch {
	case what == "load" && len(os.Args) == 3:
		var err error
		n, err = strconv.ParseUint(os.Args[2], 10, 32)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mobyipvs-peer: N: %v\n", err)
			os.Exit(2)
		}
	case what == "list" && len(os.Args) == 2:
	default:
		usage()
	}
	h, err := ipvs.New("")
	if err != nil {
		fmt.Fprintf(os.Stderr, "mobyipvs-peer: opening IPVS: %v\n", err)
		os.Exit(1)
	}
	defer h.Close()
	start := time.Now()
	var services, dests int
	if what == "load" {
		services, dests, err = load(h, uint32(n))
	} else {
		services, dests, err = list(h)
	}
	elapsed := time.Since(start)
	fmt.Printf("mobyipvs-peer %s moby_ipvs=%s services=%d destinations=%d seconds=%.3f\n",
		what, mobyVersion(), services, dests, elapsed.Seconds())
	if err != nil {
		fmt.Fprintf(os.Stderr, "mobyipvs-peer: %s: %v\n", what, err)
		os.Exit(1)
	}
}
