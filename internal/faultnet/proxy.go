// Package faultnet is a TCP proxy for fault tests: it stands between a
// client and a server on loopback and can hold back the server's answers
// (a lost acknowledgement, a partition in one direction) or cut every
// connection (a network failure), for real, at the socket level.
package faultnet

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// Proxy forwards connections made to Addr to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	paused  bool
	resume  chan struct{}
	conns   map[net.Conn]struct{}
	trigger []byte        // armed by HoldRepliesAfter
	fired   chan struct{} // closed when trigger is seen
}

// MustListen starts a proxy on 127.0.0.1 to target; it stops at cleanup.
func MustListen(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, resume: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr is host:port to connect to instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// HoldReplies stops forwarding what the server sends (it is kept and sent
// on Release): requests still arrive and are acted on, their answers do not.
func (p *Proxy) HoldReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
}

// HoldRepliesAfter arms a one-shot trigger: as soon as a client sends bytes
// containing trigger (for example the protocol line of one publish), the
// proxy holds the server's answers, as HoldReplies does, before it forwards
// those bytes. The request is acted on; its answer and everything after it
// are held until Release. The returned channel is closed when it fires.
func (p *Proxy) HoldRepliesAfter(trigger string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trigger = []byte(trigger)
	p.fired = make(chan struct{})
	return p.fired
}

// Release forwards the held answers and everything after them.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resume)
		p.resume = make(chan struct{})
	}
}

// Cut closes every open connection (new ones are still accepted).
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Release()
	p.Cut()
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.track(client, true)
		p.track(server, true)
		go func() {
			p.copyWatched(server, client)
			server.Close()
			client.Close()
		}()
		go func() {
			p.copyHeld(client, server)
			server.Close()
			client.Close()
			p.track(client, false)
			p.track(server, false)
		}()
	}
}

// copyHeld copies server to client, waiting while replies are held.
func (p *Proxy) copyHeld(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				p.mu.Lock()
				paused, resume := p.paused, p.resume
				p.mu.Unlock()
				if !paused {
					break
				}
				<-resume
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// copyWatched copies client to server, firing an armed trigger before it
// forwards the bytes that complete it (a trigger may span reads).
func (p *Proxy) copyWatched(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	var tail []byte
	for {
		n, err := src.Read(buf)
		if n > 0 {
			tail = p.watch(tail, buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// watch checks tail+b for the armed trigger and returns the new tail.
func (p *Proxy) watch(tail, b []byte) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.trigger) == 0 {
		return tail[:0]
	}
	hay := append(tail, b...)
	if bytes.Contains(hay, p.trigger) {
		p.paused = true
		p.trigger = nil
		close(p.fired)
		return tail[:0]
	}
	keep := min(len(hay), len(p.trigger)-1)
	return append(tail[:0:0], hay[len(hay)-keep:]...)
}
