// Command ferretdb runs an embedded FerretDB (v1, SQLite backend) so that the
// test suite has a MongoDB-compatible server on machines without mongod.
//
// It embeds the github.com/FerretDB/FerretDB/ferretdb package instead of
// installing cmd/ferretdb: the module zip lacks build/version/version.txt, so
// the stock binary panics at start-up, while the embeddable package skips that
// check (it only reads version.txt when the main module is FerretDB itself).
//
// FerretDB v1 runs every update/findAndModify as "query, then write" without
// a transaction, so concurrent read-modify-write commands from different
// connections lose updates ($inc) and let several compare-and-set updates win
// (e.g. {used: false} -> {used: true}). MongoDB makes each single-document
// write atomic. To get that behaviour back, by default (-serialize=true) this
// program puts FerretDB on a private Unix socket and exposes a small wire
// protocol proxy on -listen that forwards one request at a time, server-wide,
// and waits for its reply before forwarding the next. FerretDB answers every
// request with exactly one reply (it never honours moreToCome/exhaust), so the
// proxy stays in step. This costs concurrency, which a test server does not
// need.
//
// Usage: ferretdb -listen 127.0.0.1:27017 -dir /path/to/data [-log-level error] [-serialize=false]
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", "", "SQLite data directory (created if missing; required)")
	logLevel := flag.String("log-level", "error", "FerretDB log level: debug, info, warn or error (warn logs every error reply)")
	serialize := flag.Bool("serialize", true, "run one command at a time server-wide, so single-document updates are atomic")
	flag.Parse()

	if err := run(*listen, *dir, *logLevel, *serialize); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %s\n", err)
		os.Exit(1)
	}
}

func run(listen, dir, logLevel string, serialize bool) error {
	if dir == "" {
		return errors.New("-dir is required")
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("bad -log-level %q: %w", logLevel, err)
	}

	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err = os.MkdirAll(abs, 0o700); err != nil {
		return err
	}
	if !strings.HasSuffix(abs, "/") {
		abs += "/"
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	listener := ferretdb.ListenerConfig{TCP: listen}

	var front net.Listener
	var sock string
	if serialize {
		// bind the public port first, so that "address already in use" is reported before anything else
		if front, err = net.Listen("tcp", listen); err != nil {
			return err
		}
		defer front.Close()

		// a short path: Unix socket paths are limited to about 100 bytes
		sockDir, err := os.MkdirTemp("", "ferretdb-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(sockDir)

		sock = filepath.Join(sockDir, "ferretdb.sock")
		listener = ferretdb.ListenerConfig{Unix: sock}
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  listener,
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs,
	})
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	if serialize {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(ctx, front, sock)
		}()
	}

	fmt.Fprintf(os.Stderr, "ferretdb: listening on %s (serialize=%t), data in %s\n", listen, serialize, abs)

	// FerretDB's listeners are bound by New; Run serves until ctx is canceled
	err = f.Run(ctx)
	wg.Wait()
	if err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "ferretdb: stopped")

	return nil
}

// serve accepts client connections on front and relays each one to FerretDB's Unix socket,
// one request/reply exchange at a time across all connections.
func serve(ctx context.Context, front net.Listener, sock string) {
	var mu sync.Mutex // held from forwarding a request until its reply is read

	var wg sync.WaitGroup
	defer wg.Wait()

	go func() {
		<-ctx.Done()
		front.Close()
	}()

	for {
		client, err := front.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			fmt.Fprintf(os.Stderr, "ferretdb: accept: %s\n", err)
			continue
		}

		wg.Add(1)
		go func() {
			defer wg.Done()
			relay(ctx, client, sock, &mu)
		}()
	}
}

func relay(ctx context.Context, client net.Conn, sock string, mu *sync.Mutex) {
	defer client.Close()

	upstream, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: dial %s: %s\n", sock, err)
		return
	}
	defer upstream.Close()

	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			client.Close()
			upstream.Close()
		case <-done:
		}
	}()

	cr := bufio.NewReader(client)
	ur := bufio.NewReader(upstream)

	for {
		req, err := readMessage(cr)
		if err != nil {
			return // client went away (or sent garbage)
		}

		mu.Lock()
		_, err = upstream.Write(req)
		var reply []byte
		if err == nil {
			reply, err = readMessage(ur)
		}
		mu.Unlock()

		if err != nil {
			return // FerretDB closed the connection (it does that after fatal errors)
		}

		if _, err = client.Write(reply); err != nil {
			return
		}
	}
}

// maxMessageSize is above MongoDB's maxMessageSizeBytes (48,000,000).
const maxMessageSize = 64 << 20

// readMessage reads one whole wire protocol message: int32 messageLength (little-endian, including itself), then the rest.
func readMessage(r io.Reader) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}

	n := binary.LittleEndian.Uint32(head[:])
	if n < 16 || n > maxMessageSize {
		return nil, fmt.Errorf("bad message length %d", n)
	}

	msg := make([]byte, n)
	copy(msg, head[:])
	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, err
	}

	return msg, nil
}
