//! streamsink-bench: measures, in one run on the same generated events, PostgreSQL's own
//! ingest ceilings (binary COPY from one client and from four, into the full table and into one
//! with only its primary key), the streamsink binary draining a stream (clean, with 10 %
//! redeliveries, and as 1, 2, 3 processes in one group), the naive per-event configuration,
//! end-to-end latency at two fixed rates, and (with --rss) peak memory, draining many small
//! events and a few large ones. With --alternatives it also weighs the other ways into the
//! table the fast path was chosen over.
//! `scripts/bench.sh` runs it; BENCHMARKS.md explains the method and the figures.

use std::collections::HashMap;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "bench/cluster.rs"]
mod cluster;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use streamsink::event::{self, Entry, Event};
use streamsink::sink::{StatementCache, copy_events, insert_events, migrate};

#[derive(Parser, Debug)]
#[command(
    name = "streamsink-bench",
    about = "Throughput, latency and memory of streamsink, against PostgreSQL's own ceiling."
)]
struct Args {
    /// Events for the ceiling and the streamsink drain.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events for the naive run (the first N of the same data; it is slow).
    #[arg(long, default_value_t = 10_000)]
    naive_events: usize,
    /// Offered rate of the latency run, events per second.
    #[arg(long, default_value_t = 2_000)]
    latency_rate: u64,
    /// Offered rate of the second latency run, events per second.
    #[arg(long, default_value_t = 10_000)]
    latency_high_rate: u64,
    /// Length of each latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Most worker processes (one group, one stream) of the scaling run: it drains with 1, 2,
    /// … this many.
    #[arg(long, default_value_t = 3)]
    processes: usize,
    /// Also weigh the alternatives to the COPY fast path: INSERT … ON CONFLICT, and COPY into a
    /// temporary table + INSERT … SELECT … ON CONFLICT (from 4 clients, as the parallel
    /// ceiling), and one worker thread writing bigger batches.
    #[arg(long)]
    alternatives: bool,
    /// Rounds of (ceiling, streamsink), interleaved; the best of each is reported, so one
    /// disturbed round on a shared machine does not decide the ratio.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also measure peak RSS while draining --rss-events events, and while draining
    /// --rss-large-events events of --rss-large-bytes each.
    #[arg(long)]
    rss: bool,
    /// Small events for the memory run.
    #[arg(long, default_value_t = 1_000_000)]
    rss_events: usize,
    /// Large events for the memory run.
    #[arg(long, default_value_t = 200)]
    rss_large_events: usize,
    /// Size of the string in each large event's `data` (its envelope is a few hundred bytes
    /// more).
    #[arg(long, default_value_t = 1_000_000)]
    rss_large_bytes: usize,
    /// Redis to use (streams are created and deleted).
    #[arg(long, env = "TEST_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// A Postgres URL allowed to create databases (each run gets a fresh one).
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// The streamsink binary [default: next to this one].
    #[arg(long)]
    binary: Option<String>,
    /// Only compare 16 shards on --redis-url's node with the same 16 shards on this Redis
    /// Cluster (`redis+cluster://host:port,…`; `scripts/bench.sh --cluster` starts one), with 1
    /// and 2 processes, --rounds times (the best of each is reported).
    #[arg(long, value_name = "URL")]
    cluster_url: Option<String>,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e.as_ref());
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("bench: failed: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> BenchResult<()> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("streamsink").to_string_lossy().into_owned(),
    };
    let servers = SERVERS.get_or_init(|| Servers::find(args));
    if servers.postmaster.is_none() || servers.redis.is_none() {
        say(&format!("servers' CPU is measured only for local servers this user can read: {servers:?}"));
    }
    if let Some(url) = &args.cluster_url {
        return cluster::run(args, &binary, url, &generate(args.events, 0x5eed));
    }
    let n = args.events.max(args.naive_events);
    let events = generate(n, 0x5eed);
    let bytes: usize = events.iter().map(String::len).sum();
    say(&format!("{} events, {} bytes each on average", events.len(), bytes / events.len().max(1)));

    // Parsed once: the ceilings copy these, as the worker would have parsed them.
    let rows = parse_all(&events[..args.events])?;
    let mut ceiling = Best::default();
    let mut parallel = Best::default();
    let mut ceiling_pk = Best::default();
    let mut parallel_pk = Best::default();
    let mut best: Option<Drain> = None;
    for round in 1..=args.rounds.max(1) {
        let n = args.events;
        let c = ceiling.keep(measure_ceiling(args, &rows, Table::Full)?);
        say(&format!("round {round}: ceiling: COPY {n} rows at {}", c.figures()));
        let p = parallel.keep(measure_parallel(args, &rows, Table::Full, Write::Copy)?);
        say(&format!(
            "round {round}: parallel ceiling: COPY {n} rows, {PARALLEL_BATCH} per transaction from \
             {PARALLEL_CLIENTS} clients, at {}",
            p.figures()
        ));
        let c = ceiling_pk.keep(measure_ceiling(args, &rows, Table::KeyOnly)?);
        let p = parallel_pk.keep(measure_parallel(args, &rows, Table::KeyOnly, Write::Copy)?);
        say(&format!(
            "round {round}: the same into a table with only its primary key: {}; parallel {}",
            c.figures(),
            p.figures()
        ));
        let d = measure_drain(args, &binary, &events[..n], &[])?;
        say(&format!("round {round}: streamsink: drained {n} events at {}", d.figures(n)));
        if best.as_ref().is_none_or(|b| d.rate > b.rate) {
            best = Some(d);
        }
    }
    let drain = best.ok_or("no round ran")?;

    // Every tenth event already committed: its entry is a redelivery (same id), as after a
    // crash between commit and acknowledgement, or a producer's retry.
    let committed: Vec<String> = events[..args.events].iter().step_by(10).cloned().collect();
    let redelivered = measure_drain_over(args, &binary, &events[..args.events], &committed, &[], 1)?;
    say(&format!(
        "redeliveries: drained {} events, {} of them already committed, at {:.0} events/s",
        args.events,
        committed.len(),
        redelivered.rate
    ));

    // Scaling out: 1, 2, … processes in one group, each with the default settings.
    let mut scale = Vec::new();
    for processes in 1..=args.processes.max(1) {
        let d = measure_drain_over(args, &binary, &events[..args.events], &[], &[], processes)?;
        say(&format!(
            "scale: {processes} process(es) drained {} events at {} in total",
            args.events,
            d.figures(args.events)
        ));
        scale.push(format!("scale_{processes}={:.0}", d.rate));
    }

    if args.alternatives {
        weigh_alternatives(args, &binary, &events[..args.events], &rows)?;
    }

    // The per-event hook exists only in a `test-hooks` build (scripts/bench.sh builds one).
    let naive_env =
        [("STREAMSINK_TEST_HOOKS", "per-event"), ("STREAMSINK_BATCH", "10"), ("STREAMSINK_WORKERS", "1")];
    let naive = measure_drain(args, &binary, &events[..args.naive_events], &naive_env)?;
    say(&format!("naive: drained {} events at {:.0} events/s", args.naive_events, naive.rate));

    let lat = measure_latency(args, &binary, args.latency_rate)?;
    let high = measure_latency(args, &binary, args.latency_high_rate)?;
    for (rate, l) in [(args.latency_rate, &lat), (args.latency_high_rate, &high)] {
        say(&format!(
            "latency at {rate}/s for {}s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events)",
            args.latency_seconds, l.p50, l.p99, l.max, l.count
        ));
    }

    let (rss, rss_large) = if args.rss {
        let many = generate(args.rss_events, 0xb16);
        let r = measure_drain(args, &binary, &many, &[])?;
        say(&format!(
            "memory: peak RSS {:.1} MB draining {} events ({:.0} events/s)",
            r.peak_rss_mb, args.rss_events, r.rate
        ));
        drop(many);
        let large = generate_large(args.rss_large_events, args.rss_large_bytes, 0x1a46e);
        let bytes: usize = large.iter().map(String::len).sum();
        let l = measure_drain(args, &binary, &large, &[])?;
        say(&format!(
            "memory: peak RSS {:.1} MB draining {} events of {:.2} MB ({:.1} MB/s)",
            l.peak_rss_mb,
            large.len(),
            bytes as f64 / large.len().max(1) as f64 / 1e6,
            bytes as f64 / 1e6 / l.wall_seconds
        ));
        (format!("{:.1}", r.peak_rss_mb), format!("{:.1}", l.peak_rss_mb))
    } else {
        (format!("skipped(peak {:.1} at {} events)", drain.peak_rss_mb, args.events), "skipped".to_string())
    };

    let (ceiling, parallel, ceiling_pk, parallel_pk) = (ceiling.0, parallel.0, ceiling_pk.0, parallel_pk.0);
    println!(
        "bench: streamsink={:.0} ceiling={ceiling:.0} naive={:.0} ratio_ceiling={:.2} ratio_naive={:.1} p50_ms={:.1} \
         p99_ms={:.1} rss_mb={rss} rss_large_mb={rss_large} ceiling_parallel={parallel:.0} ratio_parallel={:.2} \
         redelivered={:.0} p99_high_ms={:.1} ceiling_pk={ceiling_pk:.0} ceiling_parallel_pk={parallel_pk:.0} {}",
        drain.rate,
        naive.rate,
        drain.rate / ceiling,
        drain.rate / naive.rate,
        lat.p50,
        lat.p99,
        drain.rate / parallel,
        redelivered.rate,
        high.p99,
        scale.join(" ")
    );
    Ok(())
}

/// The best (highest) rate of a ceiling's rounds.
#[derive(Default)]
struct Best(f64);

impl Best {
    /// Keeps `c`'s rate if it is the best so far; returns `c`.
    fn keep(&mut self, c: Ceiling) -> Ceiling {
        self.0 = self.0.max(c.rate);
        c
    }
}

/// Prints, beside the parallel COPY ceiling, what the other ways into `events` achieve from
/// the same 4 clients, and drains with fewer worker threads writing bigger batches: the
/// figures that chose the COPY fast path and the default workers and batch (BENCHMARKS.md).
fn weigh_alternatives(args: &Args, binary: &str, events: &[String], rows: &[Event]) -> BenchResult<()> {
    for (write, name) in [
        (Write::Copy, "COPY"),
        (Write::Insert, "INSERT … ON CONFLICT"),
        (Write::StagedCopy, "COPY into a temporary table + INSERT … SELECT … ON CONFLICT"),
    ] {
        let r = measure_parallel(args, rows, Table::Full, write)?;
        say(&format!(
            "alternatives: {name}: {} rows, {PARALLEL_BATCH} per transaction from {PARALLEL_CLIENTS} clients, \
             at {}",
            events.len(),
            r.figures()
        ));
    }
    for (workers, batch) in
        [("4", "1000"), ("2", "1000"), ("1", "5000"), ("2", "2500"), ("4", "2500"), ("3", "2000")]
    {
        let env = [("STREAMSINK_WORKERS", workers), ("STREAMSINK_BATCH", batch)];
        let d = measure_drain(args, binary, events, &env)?;
        say(&format!(
            "alternatives: {workers} worker thread(s), batches of {batch}: drained {} events at {}",
            events.len(),
            d.figures(events.len())
        ));
    }
    // The ceilings' clients speak clear text; the worker takes TLS where the server offers it
    // (libpq's `prefer`, its default). What that costs here:
    let d = measure_drain(args, binary, events, &[("STREAMSINK_PG_TLS", "off")])?;
    say(&format!(
        "alternatives: defaults, PostgreSQL in clear text: drained {} events at {}",
        events.len(),
        d.figures(events.len())
    ));
    Ok(())
}

fn say(line: &str) {
    eprintln!("bench: {line}");
}

// --- data ---------------------------------------------------------------------------------

/// A small deterministic PRNG (xorshift64*), so every run drains the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn ulid(&mut self, ms: u64) -> String {
        let random = (u128::from(self.next()) << 64) | u128::from(self.next());
        ulid::Ulid::from_parts(ms, random).to_string()
    }
}

/// `n` envelopes of about 300 bytes: ULID ids, five types, session start/end pairs making up
/// 20 %, nested `data`.
fn generate(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed | 1);
    let base_ms: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let mut out = Vec::with_capacity(n);
    let mut open_sessions: Vec<(String, String, String)> = Vec::new();
    for i in 0..n as u64 {
        let ms = base_ms + i * 7;
        let ts = jiff::Timestamp::from_millisecond(ms as i64).map(|t| t.to_string()).unwrap_or_default();
        let id = rng.ulid(ms);
        let roll = rng.below(10);
        let ev = if roll == 0 || (roll == 1 && open_sessions.is_empty()) {
            let session = (
                format!("ses_{}", rng.ulid(ms)),
                format!("ws_{}", rng.below(50)),
                format!("dev_{}", rng.below(5000)),
            );
            let ev = serde_json::json!({"id": id, "type": "session.start", "timestamp": ts,
                "session_id": session.0, "workspace_id": session.1, "device_id": session.2,
                "data": {"client": {"os": "linux", "version": format!("1.{}.{}", rng.below(20), rng.below(10))},
                         "entry": {"path": format!("/app/{}", rng.below(100)), "utm": {"source": "newsletter"}}}});
            open_sessions.push(session);
            ev
        } else if roll == 1 {
            let at = rng.below(open_sessions.len() as u64) as usize;
            let s = open_sessions.swap_remove(at);
            let reason = ["logout", "timeout", "closed"][rng.below(3) as usize];
            serde_json::json!({"id": id, "type": "session.end", "timestamp": ts,
                "session_id": s.0, "workspace_id": s.1, "device_id": s.2,
                "data": {"reason": reason,
                         "stats": {"pages": rng.below(40), "clicks": rng.below(200)}}})
        } else {
            let kind = ["page.view", "button.click", "api.request"][rng.below(3) as usize];
            let sid = open_sessions.last().map(|s| s.0.clone());
            serde_json::json!({"id": id, "type": kind, "timestamp": ts, "session_id": sid,
                "workspace_id": format!("ws_{}", rng.below(50)), "device_id": format!("dev_{}", rng.below(5000)),
                "data": {"target": {"path": format!("/app/{}/item/{}", rng.below(100), rng.below(10_000)),
                                    "label": "Save changes"},
                         "timing": {"ms": rng.below(2000), "ttfb_ms": rng.below(300)},
                         "flags": ["beta", "dark-mode"]}})
        };
        out.push(ev.to_string());
    }
    out
}

/// `n` envelopes whose `data.content` is a string of `bytes` characters (letters, digits,
/// spaces and newlines, which JSON escapes), different in every event: a transcript or file
/// upload. The envelopes are valid JSON and do not compress to nothing.
fn generate_large(n: usize, bytes: usize, seed: u64) -> Vec<String> {
    const ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n";
    let mut rng = Rng(seed | 1);
    let base_ms: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    (0..n as u64)
        .map(|i| {
            let ms = base_ms + i * 1000;
            let ts = jiff::Timestamp::from_millisecond(ms as i64).map(|t| t.to_string()).unwrap_or_default();
            let mut content = String::with_capacity(bytes);
            while content.len() < bytes {
                let take = (bytes - content.len()).min(8);
                content.extend(
                    rng.next().to_le_bytes()[..take]
                        .iter()
                        .map(|b| char::from(ALPHABET[usize::from(b & 63)])),
                );
            }
            serde_json::json!({"id": rng.ulid(ms), "type": "transcript.upload", "timestamp": ts,
                "session_id": format!("ses_{}", i % 7), "workspace_id": "github.com/user/repo",
                "device_id": format!("dev_{}", i % 3),
                "data": {"seq": i, "content_type": "text/plain", "content": content}})
            .to_string()
        })
        .collect()
}

// --- scratch resources --------------------------------------------------------------------

/// A fresh database on the benchmark server, dropped afterwards.
struct ScratchDb {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDb {
    fn create(admin: &str) -> BenchResult<ScratchDb> {
        let name = format!("ss_bench_{}", ulid::Ulid::generate().to_string().to_lowercase());
        Client::connect(admin, NoTls)?.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let config: postgres::Config = admin.parse()?;
        let old = config.get_dbname().unwrap_or("postgres");
        let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
        let base = base.strip_suffix(&format!("/{old}")).unwrap_or(base);
        let url = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        Ok(ScratchDb { admin: admin.to_string(), name, url })
    }

    fn client(&self) -> BenchResult<Client> {
        Ok(Client::connect(&self.url, NoTls)?)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// A stream name used once, deleted afterwards.
struct ScratchStream {
    url: String,
    name: String,
}

impl ScratchStream {
    fn new(url: &str) -> ScratchStream {
        ScratchStream { url: url.to_string(), name: format!("bench:{}", ulid::Ulid::generate()) }
    }

    fn con(&self) -> BenchResult<redis::Connection> {
        Ok(redis::Client::open(self.url.as_str())?.get_connection()?)
    }

    /// XADDs the events in pipelines of at most 1000 entries or about 16 MB, so large events
    /// are not sent as one huge request.
    fn publish(&self, events: &[String]) -> BenchResult<()> {
        const PIPELINE_BYTES: usize = 16 << 20;
        let mut con = self.con()?;
        let mut rest = events;
        while !rest.is_empty() {
            // At least one entry, then as many as fit in 1000 entries and PIPELINE_BYTES.
            let (mut count, mut bytes) = (1, rest[0].len());
            while count < rest.len().min(1000) && bytes + rest[count].len() <= PIPELINE_BYTES {
                bytes += rest[count].len();
                count += 1;
            }
            let (chunk, tail) = rest.split_at(count);
            let mut pipe = redis::pipe();
            for ev in chunk {
                pipe.cmd("XADD").arg(&self.name).arg("*").arg("event").arg(ev).ignore();
            }
            pipe.query::<()>(&mut con)?;
            rest = tail;
        }
        Ok(())
    }
}

impl Drop for ScratchStream {
    fn drop(&mut self) {
        if let Ok(mut c) = self.con() {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&self.name).arg(format!("{}:dlq", self.name)).query(&mut c);
        }
    }
}

// --- ceiling ------------------------------------------------------------------------------

/// The events as streamsink parses them (what the ceilings copy).
fn parse_all(events: &[String]) -> BenchResult<Vec<Event>> {
    let parsed = events
        .iter()
        .enumerate()
        .map(|(i, json)| {
            let entry = Entry {
                id: format!("1-{i}"),
                fields: vec![(b"event".to_vec(), json.clone().into_bytes())],
                deliveries: 1,
            };
            event::parse("bench", &entry, "event")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(parsed)
}

/// One binary COPY of `rows` into `events`, in the caller's transaction: streamsink's own
/// (`sink::copy_events`), so the ceiling is the statement the worker sends, without the worker.
fn copy_rows(tx: &mut postgres::Transaction<'_>, rows: &[Event]) -> BenchResult<()> {
    Ok(copy_events(tx, "bench", rows)?)
}

/// The table a ceiling writes into: the migrated `events`, or the same with only its primary
/// key (what its two secondary indexes cost).
#[derive(Clone, Copy)]
enum Table {
    Full,
    KeyOnly,
}

/// A fresh database with the migrated schema, `table` made as asked.
fn scratch_schema(args: &Args, table: Table) -> BenchResult<ScratchDb> {
    let db = ScratchDb::create(&args.database_url)?;
    let mut client = db.client()?;
    migrate::migrate(&mut client)?;
    if let Table::KeyOnly = table {
        client.batch_execute("DROP INDEX events_type_occurred_at_idx, events_session_idx")?;
    }
    Ok(db)
}

/// Rows per second of one binary COPY of the same events into a fresh `table`.
fn measure_ceiling(args: &Args, rows: &[Event], table: Table) -> BenchResult<Ceiling> {
    let db = scratch_schema(args, table)?;
    let mut client = db.client()?;
    let servers = ServerCpu::now();
    let started = Instant::now();
    let mut tx = client.transaction()?;
    copy_rows(&mut tx, rows)?;
    tx.commit()?;
    Ok(Ceiling::of(rows.len(), started, &servers))
}

/// Rows per second of a ceiling, and PostgreSQL's CPU seconds per row meanwhile.
struct Ceiling {
    rate: f64,
    /// PostgreSQL's CPU per row, µs (`n/a` when it is not on this host).
    postgres_us_per_row: String,
}

impl Ceiling {
    fn figures(&self) -> String {
        format!("{:.0} rows/s; PostgreSQL used {} us CPU/row", self.rate, self.postgres_us_per_row)
    }

    /// The figures of `rows` written since `started` (read while the connections are open).
    fn of(rows: usize, started: Instant, servers: &ServerCpu) -> Ceiling {
        let rate = rows as f64 / started.elapsed().as_secs_f64();
        Ceiling { rate, postgres_us_per_row: per_item(servers.since().0, rows) }
    }
}

/// Clients of the parallel ceiling, and rows per COPY (one transaction each): what streamsink's
/// default workers and batch do.
const PARALLEL_CLIENTS: usize = 4;
const PARALLEL_BATCH: usize = 1000;

/// How a client of [`measure_parallel`] writes one transaction's rows.
#[derive(Clone, Copy)]
enum Write {
    /// Binary COPY into `events`: the fast path.
    Copy,
    /// The worker's `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING`.
    Insert,
    /// Binary COPY into a temporary table, then `INSERT … SELECT … ON CONFLICT DO NOTHING`
    /// from it: duplicates cost nothing extra, every row is written twice.
    StagedCopy,
}

/// The staging table of [`Write::StagedCopy`]: a temporary `events` shadows the real one in this
/// session (pg_temp is searched first), so `copy_events` fills it unchanged.
const STAGING: &str =
    "CREATE TEMP TABLE events (LIKE public.events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";
const FROM_STAGING: &str = "INSERT INTO public.events SELECT * FROM pg_temp.events ORDER BY id COLLATE \"C\" ON CONFLICT (id) DO NOTHING";

/// Rows per second of 1000-row transactions from 4 clients at once into a fresh `table`, each
/// written as `write` says. With [`Write::Copy`] into the full table, the second ceiling (one
/// client does not reach PostgreSQL's limit on this machine).
fn measure_parallel(args: &Args, parsed: &[Event], table: Table, write: Write) -> BenchResult<Ceiling> {
    let db = scratch_schema(args, table)?;
    let mut clients = (0..PARALLEL_CLIENTS).map(|_| db.client()).collect::<BenchResult<Vec<_>>>()?;
    if let Write::StagedCopy = write {
        for client in &mut clients {
            client.batch_execute(STAGING)?;
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let servers = ServerCpu::now();
    let started = Instant::now();
    std::thread::scope(|scope| -> BenchResult<()> {
        let handles: Vec<_> = clients
            .iter_mut()
            .map(|client| {
                let next = &next;
                scope.spawn(move || -> Result<(), String> {
                    let mut cache = StatementCache::default();
                    loop {
                        let start = next.fetch_add(PARALLEL_BATCH, std::sync::atomic::Ordering::Relaxed);
                        if start >= parsed.len() {
                            return Ok(());
                        }
                        let rows = &parsed[start..(start + PARALLEL_BATCH).min(parsed.len())];
                        let mut tx = client.transaction().map_err(|e| e.to_string())?;
                        match write {
                            Write::Copy => copy_rows(&mut tx, rows).map_err(|e| e.to_string())?,
                            Write::Insert => {
                                insert_events(&mut tx, &mut cache, "bench", rows, &[])
                                    .map_err(|e| e.to_string())?;
                            }
                            Write::StagedCopy => {
                                copy_rows(&mut tx, rows).map_err(|e| e.to_string())?;
                                tx.execute(FROM_STAGING, &[]).map_err(|e| e.to_string())?;
                            }
                        }
                        tx.commit().map_err(|e| e.to_string())?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a client panicked")??;
        }
        Ok(())
    })?;
    let ceiling = Ceiling::of(parsed.len(), started, &servers);
    let rows: i64 = db.client()?.query_one("SELECT count(*) FROM events", &[])?.get(0);
    if rows != parsed.len() as i64 {
        return Err(format!("{rows} rows for {} events", parsed.len()).into());
    }
    Ok(ceiling)
}

// --- drain --------------------------------------------------------------------------------

struct Drain {
    rate: f64,
    peak_rss_mb: f64,
    /// CPU time (user + system) the worker used for the drain, seconds.
    cpu_seconds: f64,
    /// CPU seconds PostgreSQL's and Redis's local processes used meanwhile.
    server_cpu: (Option<f64>, Option<f64>),
    wall_seconds: f64,
}

impl Drain {
    /// The rate and where the CPU went, for `n` events.
    fn figures(&self, n: usize) -> String {
        format!(
            "{:.0} events/s in {:.2} s; CPU per event: streamsink {} us, PostgreSQL {} us, Redis {} us",
            self.rate,
            self.wall_seconds,
            per_item(Some(self.cpu_seconds), n),
            per_item(self.server_cpu.0, n),
            per_item(self.server_cpu.1, n)
        )
    }
}

/// The worker under test; stopped (SIGTERM, then waited for) however the measurement ends.
struct Worker(Child);

impl Worker {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = stop(&mut self.0);
        }
    }
}

fn spawn_worker(
    args: &Args,
    binary: &str,
    db: &ScratchDb,
    stream: &ScratchStream,
    env: &[(&str, &str)],
) -> BenchResult<Worker> {
    let mut cmd = Command::new(binary);
    cmd.arg("run")
        .env("REDIS_URL", &args.redis_url)
        .env("DATABASE_URL", &db.url)
        .env("STREAMSINK_STREAMS", &stream.name)
        .env("STREAMSINK_BLOCK", "1s")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.envs(env.iter().copied());
    Ok(Worker(
        cmd.spawn().map_err(|e| format!("cannot run {binary}: {e} (build it with cargo build --release)"))?,
    ))
}

/// The group's pending count and lag, once the worker has created the group.
fn group_state(con: &mut dyn redis::ConnectionLike, stream: &str) -> Option<(i64, Option<i64>)> {
    let groups: Vec<HashMap<String, redis::Value>> =
        redis::cmd("XINFO").arg("GROUPS").arg(stream).query(con).ok()?;
    let g = groups.first()?;
    let int = |k: &str| match g.get(k) {
        Some(redis::Value::Int(n)) => Some(*n),
        _ => None,
    };
    Some((int("pending")?, int("lag")))
}

/// User + system CPU seconds of a process so far (`/proc/<pid>/stat`, in clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> Option<f64> {
    Some(proc_stat(pid)?.ticks as f64 / 100.0)
}

/// The local processes of the servers under test, found once at start: the postmaster (the
/// parent of a backend of ours) and Redis (its `process_id`). `None` for a server on another
/// host, or one whose processes this user cannot read.
#[derive(Debug, Clone, Copy, Default)]
struct Servers {
    postmaster: Option<u32>,
    redis: Option<u32>,
}

static SERVERS: std::sync::OnceLock<Servers> = std::sync::OnceLock::new();

impl Servers {
    fn find(args: &Args) -> Servers {
        let postmaster = postgres::Client::connect(&args.database_url, NoTls)
            .ok()
            .and_then(|mut c| c.query_one("SELECT pg_backend_pid()", &[]).ok())
            .and_then(|row| u32::try_from(row.get::<_, i32>(0)).ok())
            .and_then(|backend| proc_stat(backend).map(|s| s.ppid));
        let redis = redis::Client::open(args.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c))
            .ok()
            .and_then(|info| info.lines().find_map(|l| l.strip_prefix("process_id:")?.trim().parse().ok()));
        // Our own connection is gone, so its pid may be reused: check what it names is a server.
        let named =
            |pid: Option<u32>, name: &str| pid.filter(|&p| proc_stat(p).is_some_and(|s| s.comm == name));
        Servers { postmaster: named(postmaster, "postgres"), redis: named(redis, "redis-server") }
    }
}

/// The fields of `/proc/<pid>/stat` the bench reads.
struct ProcStat {
    comm: String,
    ppid: u32,
    /// User + system CPU, in clock ticks (10 ms).
    ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        comm: stat[open + 1..close].to_string(),
        ppid: u32::try_from(field(1)?).ok()?,
        ticks: field(11)? + field(12)?,
    })
}

/// CPU ticks so far of the servers under test ([`Servers`]: the postmaster and its children,
/// Redis and its children), by pid.
struct ServerCpu(HashMap<u32, (bool, u64)>);

impl ServerCpu {
    fn now() -> ServerCpu {
        let servers = SERVERS.get().copied().unwrap_or_default();
        let mut by_pid = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Some(stat) = proc_stat(pid) else { continue };
            let of = |server: Option<u32>| server.is_some_and(|s| s == pid || s == stat.ppid);
            if of(servers.postmaster) {
                by_pid.insert(pid, (true, stat.ticks));
            } else if of(servers.redis) {
                by_pid.insert(pid, (false, stat.ticks));
            }
        }
        ServerCpu(by_pid)
    }

    /// CPU seconds (PostgreSQL, Redis) used since `self` by the processes alive now (a backend
    /// that has exited took its figure with it: read this before closing connections); `None`
    /// for a server not found on this host.
    fn since(&self) -> (Option<f64>, Option<f64>) {
        let servers = SERVERS.get().copied().unwrap_or_default();
        let mut used = (0, 0);
        for (pid, (postgres, ticks)) in ServerCpu::now().0 {
            let before = self.0.get(&pid).map_or(0, |b| b.1);
            let delta = ticks.saturating_sub(before);
            if postgres { used.0 += delta } else { used.1 += delta }
        }
        let seconds = |found: Option<u32>, ticks: u64| found.map(|_| ticks as f64 / 100.0);
        (seconds(servers.postmaster, used.0), seconds(servers.redis, used.1))
    }
}

/// Microseconds of CPU per item, or `n/a` for a server not on this host.
fn per_item(seconds: Option<f64>, n: usize) -> String {
    seconds.map_or("n/a".to_string(), |s| format!("{:.1}", s * 1e6 / n.max(1) as f64))
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Publishes `events` to a fresh stream, then times the binary from process start until every
/// entry is delivered and acknowledged (acknowledgement follows commit), and checks the rows.
fn measure_drain(args: &Args, binary: &str, events: &[String], env: &[(&str, &str)]) -> BenchResult<Drain> {
    measure_drain_over(args, binary, events, &[], env, 1)
}

/// [`measure_drain`] by `processes` workers in one group, into a migrated database already
/// holding `committed` (copied in before the workers start): their entries are
/// redeliveries of committed events. CPU is the workers' sum, peak RSS the largest.
fn measure_drain_over(
    args: &Args,
    binary: &str,
    events: &[String],
    committed: &[String],
    env: &[(&str, &str)],
    processes: usize,
) -> BenchResult<Drain> {
    // Migrated beforehand, as the ceilings' table is: the time is the drain's, not the schema's.
    let db = scratch_schema(args, Table::Full)?;
    if !committed.is_empty() {
        let mut client = db.client()?;
        let mut tx = client.transaction()?;
        copy_rows(&mut tx, &parse_all(committed)?)?;
        tx.commit()?;
    }
    let stream = ScratchStream::new(&args.redis_url);
    stream.publish(events)?;
    let mut con = stream.con()?;
    let servers = ServerCpu::now();
    let started = Instant::now();
    let mut children = (0..processes.max(1))
        .map(|_| spawn_worker(args, binary, &db, &stream, env))
        .collect::<BenchResult<Vec<_>>>()?;
    let pids: Vec<u32> = children.iter().map(Worker::id).collect();
    let mut peak_kb = 0;
    let elapsed = wait_drained(started, &mut children, || {
        peak_kb = pids.iter().filter_map(|&pid| peak_rss_kb(pid)).fold(peak_kb, u64::max);
        group_state(&mut con, &stream.name) == Some((0, Some(0)))
    })?;
    // VmHWM is a high-water mark: this last reading covers everything up to the final ack.
    peak_kb = pids.iter().filter_map(|&pid| peak_rss_kb(pid)).fold(peak_kb, u64::max);
    let cpu = pids.iter().filter_map(|&pid| cpu_seconds(pid)).sum();
    let server_cpu = servers.since();
    drop(children);
    let rows: i64 = db.client()?.query_one("SELECT count(*) FROM events", &[])?.get(0);
    if rows != events.len() as i64 {
        return Err(format!("{rows} rows for {} events", events.len()).into());
    }
    Ok(Drain {
        rate: events.len() as f64 / elapsed.as_secs_f64(),
        peak_rss_mb: peak_kb as f64 / 1024.0,
        cpu_seconds: cpu,
        server_cpu,
        wall_seconds: elapsed.as_secs_f64(),
    })
}

/// Time from `started` until `drained` says so (polled every 5 ms); an error if a worker exits
/// first or 30 minutes pass.
fn wait_drained(
    started: Instant,
    children: &mut [Worker],
    mut drained: impl FnMut() -> bool,
) -> BenchResult<Duration> {
    let deadline = started + Duration::from_secs(1800);
    loop {
        if drained() {
            return Ok(started.elapsed());
        }
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                return Err(format!("streamsink exited early ({status})").into());
            }
        }
        if Instant::now() > deadline {
            return Err("the drain did not finish within 30 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop(child: &mut Child) -> BenchResult<()> {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    child.wait()?;
    Ok(())
}

// --- latency ------------------------------------------------------------------------------

struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    count: usize,
}

/// Offers `rate` events/s for `latency_seconds` to a running worker; each event's
/// delay runs from just before its XADD to the moment its commit is observed (a NOTIFY from
/// a row trigger, which Postgres delivers only at commit).
fn measure_latency(args: &Args, binary: &str, rate: u64) -> BenchResult<Latency> {
    let db = ScratchDb::create(&args.database_url)?;
    let stream = ScratchStream::new(&args.redis_url);
    let mut con = stream.con()?;
    let child = spawn_worker(args, binary, &db, &stream, &[])?;
    // Ready: the group exists and the schema is migrated (the worker creates the group first).
    let mut client = db.client()?;
    let ready = Instant::now() + Duration::from_secs(60);
    let migrated = |c: &mut Client| {
        c.query_one("SELECT to_regclass('events') IS NOT NULL", &[])
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
    };
    while group_state(&mut con, &stream.name).is_none() || !migrated(&mut client) {
        if Instant::now() > ready {
            return Err("the worker did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    client.batch_execute(
        "CREATE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_notify('streamsink_bench', NEW.stream_entry_id); RETURN NULL; END $$;
         CREATE TRIGGER bench_notify AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION bench_notify();",
    )?;
    let total = (rate * args.latency_seconds) as usize;
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let mut listener = db.client()?;
    listener.batch_execute("LISTEN streamsink_bench")?;
    let listen = std::thread::spawn(move || {
        let mut n = listener.notifications();
        let mut iter = n.timeout_iter(Duration::from_secs(15));
        let mut got = 0;
        while got < total {
            match iter.next() {
                Ok(Some(note)) => {
                    let _ = tx.send((note.payload().to_string(), Instant::now()));
                    got += 1;
                }
                _ => break,
            }
        }
    });

    let events = generate(total, 0x1a7);
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(total);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let t0 = Instant::now();
    for (i, ev) in events.iter().enumerate() {
        let due = t0 + interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let at = Instant::now();
        let id: String =
            redis::cmd("XADD").arg(&stream.name).arg("*").arg("event").arg(ev).query(&mut con)?;
        sent.insert(id, at);
    }
    let _ = listen.join();
    drop(child);
    let mut delays: Vec<f64> = rx
        .try_iter()
        .filter_map(|(id, at)| sent.get(&id).map(|s| at.duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    if delays.len() != total {
        return Err(format!("saw {} of {total} commits", delays.len()).into());
    }
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| delays[((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len()) - 1];
    Ok(Latency { p50: pct(0.50), p99: pct(0.99), max: delays[delays.len() - 1], count: delays.len() })
}
