// Package cache is herd-front's response cache: an in-memory LRU of whole
// HTTP responses per front, honouring Cache-Control, Expires and Vary, with
// one upstream fetch for concurrent misses of a key (nginx's
// proxy_cache_lock).
package cache

import (
	"container/list"
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

const (
	defaultMaxBytes = 64 << 20
	// maxVariants bounds the stored variants of one key, so a Vary on a
	// header with many values cannot fill the cache with one URL.
	maxVariants = 8
	// entryOverhead approximates an entry's bookkeeping (struct, list
	// element, map slot) beyond its headers and body.
	entryOverhead = 256
	// defaultLockTimeout is how long a miss waits for another request's
	// fetch of the same key before going upstream itself (nginx's
	// proxy_cache_lock_timeout).
	defaultLockTimeout = 5 * time.Second
)

// Response is a stored or fetched response.
type Response struct {
	Status int
	Header http.Header
	// Body is the whole body. A Body returned by the cache is shared with
	// the stored entry: callers must not modify it.
	Body    []byte
	Release string    // the release that produced it
	Stored  time.Time // when it was stored (for Age); zero if not from the cache
}

// Fetch is how the caller gets a response from upstream on a miss. It must
// return the whole response: the caller buffers it, up to a limit it
// chooses, and if the body is too big to cache it returns the response with
// tooBig=true and the cache does not store it. The cache keeps its own copy
// of what it stores, so the caller may reuse the returned buffers.
type Fetch func() (resp *Response, tooBig bool, err error)

// Cache is an LRU of responses bounded by their approximate size in bytes.
// It is safe for concurrent use.
type Cache struct {
	now         func() time.Time
	maxBytes    int64
	lockTimeout time.Duration

	mu      sync.Mutex
	size    int64
	lru     *list.List       // of *entry, most recently used first
	entries map[key][]*entry // the variants of a key, newest first
	flights map[key]*flight  // fetches in progress, by key
}

// entry is a stored response. Only elem changes after it is stored, under
// Cache.mu; the rest may be read without the lock.
type entry struct {
	key     key
	variant variant
	status  int
	header  http.Header
	body    []byte
	release string
	stored  time.Time
	fresh   freshness
	size    int64
	elem    *list.Element
}

// flight is a fetch in progress that other misses of its key wait for.
type flight struct {
	done chan struct{}
	// entry is what the fetch stored, or nil: set before done is closed.
	entry *entry
}

// New returns a cache bounded to maxBytes of stored bodies and headers
// (approximate; 64 MiB if maxBytes <= 0). now may be nil (time.Now); tests
// inject a clock.
func New(maxBytes int64, now func() time.Time) *Cache {
	if maxBytes <= 0 {
		maxBytes = defaultMaxBytes
	}
	if now == nil {
		now = time.Now
	}
	return &Cache{
		now:         now,
		maxBytes:    maxBytes,
		lockTimeout: defaultLockTimeout,
		lru:         list.New(),
		entries:     make(map[key][]*entry),
		flights:     make(map[key]*flight),
	}
}

// Do serves r for app. On a fresh hit it returns the stored response and
// hit=true. Otherwise it calls fetch, stores the result if it is cacheable,
// and returns it with hit=false.
//
// Concurrent misses of one key make one fetch: the first caller fetches and
// the others wait for it, then answer from what it stored. If it stored
// nothing (the response was not cacheable, too big, or an error), or what
// it stored does not fit a waiter's request (another Vary variant, or a
// waiter with credentials and a response not marked public), each waiter
// calls its own fetch: a response is shared between clients only if it
// could have been served to them from the cache. A waiter also gives up
// waiting, and fetches itself, after a lock timeout; if r's context ends
// while it waits, Do returns the context's error.
//
// Only GET and HEAD are looked up; HEAD answers from GET's entry, and a
// HEAD miss is fetched but not stored, as it has no body. Any other method
// is fetched directly and nothing is stored; if it succeeds and the method
// is unsafe (POST, PUT, DELETE...), the URL's entries are dropped (RFC 9111
// section 4.4).
//
// live reports whether a release may still serve: entries of a release
// that is not live are misses, and are removed. A nil live means every
// release is live. live is called with the cache's lock held: it must be
// quick and must not call the Cache.
func (c *Cache) Do(app string, r *http.Request, live func(release string) bool, fetch Fetch) (resp *Response, hit bool, err error) {
	if live == nil {
		live = everyRelease
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		resp, _, err := fetch()
		if err == nil && resp != nil && !safeMethod(r.Method) && resp.Status >= 200 && resp.Status < 400 {
			c.invalidate(keyOf(app, r))
		}
		return resp, false, err
	}
	k := keyOf(app, r)
	rr := rulesOf(r)
	if rr.lookup {
		now := c.now()
		if e := c.lookup(k, r, rr, live, now); e != nil {
			return e.response(r.Method, now), true, nil
		}
	}
	if !rr.store {
		resp, _, err := fetch()
		return resp, false, err
	}

	f, leader := c.join(k)
	if leader {
		defer c.land(k, f)
		resp, e, err := c.fetchAndStore(k, r, rr, fetch)
		f.entry = e
		return resp, false, err
	}
	landed, err := c.wait(r.Context(), f)
	if err != nil {
		return nil, false, err
	}
	if landed && f.entry != nil {
		now := c.now()
		if ok, _ := f.entry.serves(r, rr, live, now); ok {
			return f.entry.response(r.Method, now), false, nil
		}
	}
	resp, _, err = c.fetchAndStore(k, r, rr, fetch)
	return resp, false, err
}

// DropReleases removes every entry of app whose release is not live
// (called when assignments change). live is called with the cache's lock
// held, as in Do.
func (c *Cache) DropReleases(app string, live func(release string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.lru.Front(); el != nil; {
		e := el.Value.(*entry)
		el = el.Next()
		if e.key.app == app && !live(e.release) {
			c.remove(e)
		}
	}
}

// Len reports the number of stored responses (every variant counts).
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Size reports the approximate bytes stored.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

func everyRelease(string) bool { return true }

// safeMethod reports whether a method is safe (RFC 9110 section 9.2.1):
// it does not change the resource, so the cache keeps its entries.
func safeMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// lookup returns the fresh entry that answers r, dropping stale entries
// and entries of releases that are no longer live on the way.
func (c *Cache) lookup(k key, r *http.Request, rr requestRules, live func(string) bool, now time.Time) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	var found *entry
	var drop []*entry
	for _, e := range c.entries[k] {
		ok, gone := e.serves(r, rr, live, now)
		if gone {
			drop = append(drop, e)
		}
		if ok {
			found = e
			break
		}
	}
	for _, e := range drop {
		c.remove(e)
	}
	if found != nil {
		c.lru.MoveToFront(found.elem)
	}
	return found
}

// serves reports whether e may answer r at now; gone reports that it may
// answer no request any more (stale, or its release is not live).
func (e *entry) serves(r *http.Request, rr requestRules, live func(string) bool, now time.Time) (ok, gone bool) {
	if !e.variant.matches(r) {
		return false, false
	}
	age := e.age(now)
	if age >= e.fresh.lifetime || !live(e.release) {
		return false, true
	}
	if rr.credentialed && !e.fresh.shared {
		return false, false
	}
	if rr.maxAge >= 0 && int64(age/time.Second) > rr.maxAge {
		return false, false
	}
	return e.fresh.lifetime-age >= rr.minFresh, false
}

func (e *entry) age(now time.Time) time.Duration {
	return max(now.Sub(e.stored), 0) + e.fresh.initialAge
}

// response is e as a Response with its current Age: a fresh header map the
// caller may change, and the shared body (none for HEAD).
func (e *entry) response(method string, now time.Time) *Response {
	h := e.header.Clone()
	h.Set("Age", strconv.FormatInt(int64(e.age(now)/time.Second), 10))
	body := e.body
	if method == http.MethodHead {
		body = nil
	}
	return &Response{Status: e.status, Header: h, Body: body, Release: e.release, Stored: e.stored}
}

// join returns the flight for k, and whether the caller leads it (must
// fetch, then land it).
func (c *Cache) join(k key) (f *flight, leader bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[k]; ok {
		return f, false
	}
	f = &flight{done: make(chan struct{})}
	c.flights[k] = f
	return f, true
}

// land ends a flight and wakes its waiters. It runs deferred, so a
// panicking fetch still releases them (with nothing stored).
func (c *Cache) land(k key, f *flight) {
	c.mu.Lock()
	delete(c.flights, k)
	c.mu.Unlock()
	close(f.done)
}

// wait blocks until f lands (landed) or the lock timeout passes, or
// returns ctx's error if it ends first. f.entry may be read only once f
// has landed.
func (c *Cache) wait(ctx context.Context, f *flight) (landed bool, err error) {
	t := time.NewTimer(c.lockTimeout)
	defer t.Stop()
	select {
	case <-f.done:
		return true, nil
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// fetchAndStore calls fetch and stores its response if it may be; the
// entry is nil if nothing was stored.
func (c *Cache) fetchAndStore(k key, r *http.Request, rr requestRules, fetch Fetch) (*Response, *entry, error) {
	resp, tooBig, err := fetch()
	if err != nil || tooBig {
		return resp, nil, err
	}
	return resp, c.store(k, r, rr, resp), nil
}

// store keeps a copy of resp under k if it is cacheable and small enough,
// replacing the variants that would answer r, then evicts least recently
// used entries until the cache is within its bound.
func (c *Cache) store(k key, r *http.Request, rr requestRules, resp *Response) *entry {
	now := c.now()
	fresh, ok := storable(rr, resp, now)
	if !ok {
		return nil
	}
	e := &entry{
		key:     k,
		variant: variantOf(resp.Header, r),
		status:  resp.Status,
		header:  withoutHopByHop(resp.Header),
		body:    slices.Clone(resp.Body),
		release: resp.Release,
		stored:  now,
		fresh:   fresh,
	}
	e.size = e.computeSize()
	if e.size > c.maxBytes/8 {
		return nil
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.entries[k]
	variants := make([]*entry, 0, min(len(old)+1, maxVariants))
	variants = append(variants, e)
	for _, o := range old {
		if len(variants) == maxVariants || o.variant.matches(r) {
			c.unlink(o)
			continue
		}
		variants = append(variants, o)
	}
	c.entries[k] = variants
	e.elem = c.lru.PushFront(e)
	c.size += e.size
	for c.size > c.maxBytes {
		c.remove(c.lru.Back().Value.(*entry))
	}
	return e
}

// invalidate drops every variant of k.
func (c *Cache) invalidate(k key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries[k] {
		c.unlink(e)
	}
	delete(c.entries, k)
}

// remove drops e from the LRU and from its key's variants. c.mu is held.
func (c *Cache) remove(e *entry) {
	c.unlink(e)
	variants := c.entries[e.key]
	if i := slices.Index(variants, e); i >= 0 {
		variants = slices.Delete(variants, i, i+1)
	}
	if len(variants) == 0 {
		delete(c.entries, e.key)
	} else {
		c.entries[e.key] = variants
	}
}

// unlink drops e from the LRU and the size count only; the caller fixes
// the variants. c.mu is held.
func (c *Cache) unlink(e *entry) {
	c.lru.Remove(e.elem)
	c.size -= e.size
}

func (e *entry) computeSize() int64 {
	n := entryOverhead + len(e.body) + len(e.release) + e.variant.size() +
		len(e.key.app) + len(e.key.scheme) + len(e.key.host) + len(e.key.uri)
	for name, values := range e.header {
		n += len(name)
		for _, v := range values {
			n += len(v)
		}
	}
	return int64(n)
}
