package agent

import (
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc on every
// architecture Go supports.
const clockTicks = 100

// groupUsage sums resident memory (bytes) and CPU time (seconds) over the
// processes of process group pgid: a worker and everything it forked.
func groupUsage(pgid int) (rss uint64, cpu float64) {
	if pgid <= 0 {
		return 0, 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0
	}
	page := uint64(os.Getpagesize())
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces; fields after it are
		// plain numbers.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15,
		// rss 24 (in pages).
		if len(f) < 22 {
			continue
		}
		if pg, _ := strconv.Atoi(f[2]); pg != pgid {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		pages, _ := strconv.ParseUint(f[21], 10, 64)
		cpu += float64(ut+st) / clockTicks
		rss += pages * page
	}
	return rss, cpu
}
