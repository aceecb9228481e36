// Command ferretdb runs an embedded FerretDB (v1) so that the test suite has a MongoDB-compatible
// server on machines without mongod: on a private PostgreSQL cluster (the default) or on SQLite.
//
// It embeds the github.com/FerretDB/FerretDB/ferretdb package instead of
// installing cmd/ferretdb: the module zip lacks build/version/version.txt, so
// the stock binary panics at start-up, while the embeddable package skips that
// check (it only reads version.txt when the main module is FerretDB itself).
//
// Backing stores (-backend):
//
//   - postgresql (the default): this program runs its own PostgreSQL cluster in -dir/postgresql
//     (initdb on first use, then postgres, listening only on a Unix socket in a private
//     directory) and stops it when it stops. As root it runs PostgreSQL (which refuses to run as
//     root) as -postgresql-user, which owns the cluster's files. FerretDB v1 looks documents up
//     with "_jsonb->'field' @> value", which its own btree indexes on "_jsonb->'field'" cannot
//     serve, so every lookup, even by _id, is a sequential scan (FerretDB issue #4646). An event
//     trigger in the cluster gives each index whose first key is such a field a GIN companion
//     on the same expression (jsonb_path_ops, which serves @>), dropped with it; custom plans
//     are forced so that the field name, a query parameter, is known when the plan is made.
//   - sqlite: FerretDB's SQLite files in -dir. Its pushdown compares "_ferretdb_sjson->'$._id'",
//     an expression none of its indexes is on, so every query scans the whole collection.
//
// FerretDB v1 runs every update/findAndModify as "query, then write" without
// a transaction, on either backend, so concurrent read-modify-write commands from different
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
// Usage: ferretdb -listen 127.0.0.1:27017 -dir /path/to/data [-backend postgresql|sqlite]
//
//	[-postgresql-bin DIR] [-postgresql-user NAME] [-log-level error] [-serialize=false]
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
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/jackc/pgx/v5"
)

func main() {
	// PostgreSQL is told to stop when the thread that started it ends (Pdeathsig): keep that
	// thread the main one, which lives as long as the process.
	runtime.LockOSThread()

	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", "", "data directory (created if missing; required)")
	backend := flag.String("backend", "postgresql", "backing store: postgresql (a private cluster in -dir) or sqlite")
	pgBin := flag.String("postgresql-bin", "", "directory of PostgreSQL's initdb and postgres (default: postgres on PATH, else the newest /usr/lib/postgresql/*/bin)")
	pgUser := flag.String("postgresql-user", "postgres", "the user PostgreSQL runs as when this program runs as root")
	logLevel := flag.String("log-level", "error", "FerretDB log level: debug, info, warn or error (warn logs every error reply)")
	serialize := flag.Bool("serialize", true, "run one command at a time server-wide, so single-document updates are atomic")
	flag.Parse()

	if err := run(*listen, *dir, *backend, *pgBin, *pgUser, *logLevel, *serialize); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %s\n", err)
		os.Exit(1)
	}
}

func run(listen, dir, backend, pgBin, pgUser, logLevel string, serialize bool) error {
	if dir == "" {
		return errors.New("-dir is required")
	}
	if backend != "postgresql" && backend != "sqlite" {
		return fmt.Errorf("bad -backend %q: postgresql or sqlite", backend)
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

	config := &ferretdb.Config{Listener: listener, Logger: logger, Handler: backend}
	where := abs
	var lost atomic.Bool // the PostgreSQL cluster exited by itself

	if backend == "sqlite" {
		config.SQLiteURL = "file:" + abs + "/"
	} else {
		cluster, err := startPostgres(ctx, filepath.Join(abs, "postgresql"), pgBin, pgUser)
		if err != nil {
			return fmt.Errorf("postgresql: %w", err)
		}
		defer cluster.stop()

		// the cluster stopping by itself stops this program too
		go func() {
			select {
			case <-cluster.exited:
				lost.Store(true)
				stop()
			case <-ctx.Done():
			}
		}()

		config.PostgreSQLURL = cluster.url
		where = cluster.dir
	}

	f, err := ferretdb.New(config)
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

	fmt.Fprintf(os.Stderr, "ferretdb: listening on %s (serialize=%t), %s data in %s\n", listen, serialize, backend, where)

	// FerretDB's listeners are bound by New; Run serves until ctx is canceled
	err = f.Run(ctx)
	wg.Wait()
	if err != nil {
		return err
	}
	if lost.Load() {
		return errors.New("postgres exited (see the log above)")
	}

	fmt.Fprintln(os.Stderr, "ferretdb: stopped")

	return nil
}

// ---------------------------------------------------------------- PostgreSQL

// database is the PostgreSQL database FerretDB keeps its MongoDB databases in (one schema each).
const database = "ferretdb"

// companions gives every btree index FerretDB makes whose first key is a top-level field
// ("_jsonb->'field'") a GIN index on that expression, dropped with it. Run in the ferretdb
// database. Without fastupdate: GIN's pending list is read by every lookup until a vacuum
// merges it, and 10^5 fresh sessions in it made each lookup by _id take 10 ms instead of 1.
const companions = `
CREATE OR REPLACE FUNCTION public.ferretdb_runner_companion() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
	made record;
BEGIN
	FOR made IN
		SELECT n.nspname AS schema, c.relname AS name, t.relname AS tab,
			pg_get_indexdef(i.indexrelid, 1, false) AS expr
		FROM pg_event_trigger_ddl_commands() AS d
		JOIN pg_index AS i ON i.indexrelid = d.objid
		JOIN pg_class AS c ON c.oid = i.indexrelid
		JOIN pg_class AS t ON t.oid = i.indrelid
		JOIN pg_namespace AS n ON n.oid = c.relnamespace
		JOIN pg_am AS a ON a.oid = c.relam
		-- pg_get_indexdef gives an expression key as "((_jsonb -> 'field'::text))"
		WHERE d.command_tag = 'CREATE INDEX' AND a.amname = 'btree'
			AND t.relname NOT LIKE '\_ferretdb\_%'
			AND pg_get_indexdef(i.indexrelid, 1, false) ~ '^\(\(_jsonb -> ''([^'']|'''')*''::text\)\)$'
	LOOP
		EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin (%s jsonb_path_ops) WITH (fastupdate = off)',
			left(made.name, 59) || '_gin', made.schema, made.tab, made.expr);
	END LOOP;
END $$;

CREATE OR REPLACE FUNCTION public.ferretdb_runner_companion_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
	gone record;
BEGIN
	FOR gone IN
		SELECT schema_name, object_name FROM pg_event_trigger_dropped_objects()
		WHERE object_type = 'index' AND original AND object_name NOT LIKE '%\_gin'
	LOOP
		EXECUTE format('DROP INDEX IF EXISTS %I.%I', gone.schema_name, left(gone.object_name, 59) || '_gin');
	END LOOP;
END $$;

DROP EVENT TRIGGER IF EXISTS ferretdb_runner_companion;
CREATE EVENT TRIGGER ferretdb_runner_companion ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
	EXECUTE FUNCTION public.ferretdb_runner_companion();
DROP EVENT TRIGGER IF EXISTS ferretdb_runner_companion_drop;
CREATE EVENT TRIGGER ferretdb_runner_companion_drop ON sql_drop WHEN TAG IN ('DROP INDEX')
	EXECUTE FUNCTION public.ferretdb_runner_companion_drop();
`

type postgres struct {
	dir    string // the cluster's data directory
	url    string // for FerretDB: the database, over the Unix socket
	cmd    *exec.Cmd
	exited chan struct{} // closed when postgres exits
	sock   string        // the socket's directory
}

// startPostgres creates the cluster in dir if it has none, starts it and waits until it accepts
// connections; the database, the event triggers and the settings are in place when it returns.
func startPostgres(ctx context.Context, dir, bin, userName string) (*postgres, error) {
	if bin == "" {
		var err error
		if bin, err = findPostgres(); err != nil {
			return nil, err
		}
	}

	// Its own process group: a Ctrl-C reaches this program, which stops PostgreSQL after
	// FerretDB. Pdeathsig: a fast shutdown if this program dies without stopping it.
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	owner := -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup(userName)
		if err != nil {
			return nil, fmt.Errorf("running as root, and no user %q to run PostgreSQL as: %w", userName, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		attr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		owner = uid
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sockDir, err := os.MkdirTemp("", "ferretdb-pg-")
	if err != nil {
		return nil, err
	}
	if owner >= 0 {
		for _, path := range []string{dir, sockDir} {
			if err = os.Chown(path, owner, int(attr.Credential.Gid)); err != nil {
				return nil, err
			}
		}
		if err = reachable(filepath.Dir(dir)); err != nil {
			return nil, err
		}
	}

	if _, err = os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		// trust: only this user can reach the socket's directory; --no-sync: test data
		initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "--pgdata", dir, "--username", "ferretdb",
			"--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions")
		initdb.Stdout, initdb.Stderr, initdb.SysProcAttr = os.Stderr, os.Stderr, attr
		if err = initdb.Run(); err != nil {
			return nil, fmt.Errorf("initdb: %w", err)
		}
	}

	// Test data in a temporary directory: no durability work. Sockets only, in a private
	// directory, so that nothing else can collide with or reach this cluster.
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", dir, "-k", sockDir,
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "plan_cache_mode=force_custom_plan", "-c", "log_checkpoints=off",
		"-c", "log_min_messages=warning")
	cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = os.Stderr, os.Stderr, attr
	if err = cmd.Start(); err != nil {
		os.RemoveAll(sockDir)
		return nil, err
	}

	pg := &postgres{dir: dir, cmd: cmd, exited: make(chan struct{}), sock: sockDir}
	go func() {
		_ = cmd.Wait()
		close(pg.exited)
	}()

	admin := fmt.Sprintf("postgres://ferretdb@/postgres?host=%s&sslmode=disable", sockDir)
	pg.url = fmt.Sprintf("postgres://ferretdb@/%s?host=%s&sslmode=disable", database, sockDir)
	if err = pg.prepare(ctx, admin); err != nil {
		pg.stop()
		return nil, err
	}

	return pg, nil
}

// prepare waits for the cluster to accept connections, then creates the database and the event
// triggers if they are missing.
func (pg *postgres) prepare(ctx context.Context, admin string) error {
	deadline := time.Now().Add(60 * time.Second)
	var conn *pgx.Conn
	for {
		var err error
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err = pgx.Connect(attempt, admin)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-pg.exited:
			return errors.New("postgres exited while starting (see the log above)")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no connection in 60s: %w", err)
		}
	}

	var exists bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", database).Scan(&exists)
	if err == nil && !exists {
		_, err = conn.Exec(ctx, "CREATE DATABASE "+database)
	}
	conn.Close(ctx)
	if err != nil {
		return err
	}

	if conn, err = pgx.Connect(ctx, pg.url); err != nil {
		return err
	}
	defer conn.Close(ctx)

	_, err = conn.Exec(ctx, "BEGIN;"+companions+"COMMIT;")

	return err
}

// stop shuts the cluster down (fast: clients are disconnected) and waits for it.
func (pg *postgres) stop() {
	defer os.RemoveAll(pg.sock)

	select {
	case <-pg.exited:
		return
	default:
	}

	_ = pg.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-pg.exited:
	case <-time.After(30 * time.Second):
		_ = pg.cmd.Process.Kill()
		<-pg.exited
	}
}

// findPostgres returns the directory of the postgres on PATH, else of the newest Debian one.
func findPostgres() (string, error) {
	if path, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(path); err == nil {
			path = real // initdb is beside the real one
		}
		return filepath.Dir(path), nil
	}

	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(found, func(i, j int) bool {
		vi, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(found[i]))), 64)
		vj, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(found[j]))), 64)
		return vi > vj
	})
	if len(found) == 0 {
		return "", errors.New("no postgres on PATH or in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")
	}

	return filepath.Dir(found[0]), nil
}

// reachable lets others search (not list) each directory from path up to the root that
// others cannot search yet and this user owns, so that the unprivileged user reaches the
// cluster below it (a temporary directory is made 0700).
func reachable(path string) error {
	for {
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		stat, _ := info.Sys().(*syscall.Stat_t)
		if info.Mode().Perm()&0o001 == 0 {
			if stat == nil || int(stat.Uid) != os.Geteuid() {
				return fmt.Errorf("%s: others cannot search it, and it is not ours to change", path)
			}
			if err = os.Chmod(path, info.Mode().Perm()|0o001); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "ferretdb: made %s searchable by others (o+x) for PostgreSQL's user\n", path)
		}
		parent := filepath.Dir(path)
		if parent == path {
			return nil
		}
		path = parent
	}
}

// ---------------------------------------------------------------- the serialising proxy

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
