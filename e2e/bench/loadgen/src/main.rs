//! Load generator for the tracking-server benchmark (e2e/bench/run.sh).
//!
//! One subcommand per measurement; each prints one JSON object on stdout. Requests go over
//! plain HTTP/1.1 with hyper's low-level connection API, so the benchmark decides exactly when
//! a connection is opened: every client keeps one connection alive (like the `requests.Session`
//! the mlflow client uses) and reconnects only when the server closes it; the keep-alive probe
//! opens a fresh connection per request on purpose. Request bodies are serialised before the
//! clock starts. Only loopback addresses are accepted as targets, and every loop is bounded by a
//! request count and a deadline.
//!
//!   loadgen seed       --url U --runs 10000 [--clients 8]
//!   loadgen seed-sql   --experiment-id ID --runs 10000 [--schema mlflow|ferroflow --artifact-location L] | psql ...
//!   loadgen search     --url U --kind experiments [--max-results 100 ...]   (experiments/search)
//!   loadgen log-batch  --url U [--clients 8 --metrics 1000 --keys 10 --requests 300 --duration 20 --rate R]
//!   loadgen log-metric --url U [--clients 8 --requests 20000 --duration 10 --rate R]
//!   loadgen log-param  --url U [same as log-metric; a new param key per request]
//!   loadgen set-tag    --url U [same as log-metric; one tag key set again and again]
//!   loadgen search     --url U --experiment-id ID [--max-results 100 --clients 4 --queries 400 --duration 15]
//!   loadgen keepalive  --url U [--requests 200]
//!   loadgen sweep      --url U [--runs 2000 --clients 8 --registered-models 50 --versions 4 --logged-models 200]
//!   loadgen search-paths --url U --experiment-id ID [--clients 8 --duration 4 --queries 5000 --only N]
//!   loadgen rss        --pid PID
//!
//! `--rate R` paces each client to R requests per second (the soak, e2e/bench/soak.sh); without it
//! a client sends its next request as soon as the previous one is answered.
//!
//! Common: `--label k=v` (repeatable) copies k/v into the output object. log-batch, log-metric,
//! log-param, set-tag and search also take `--server-pid PID --db NAME [--clk-tck 100]` to
//! report the CPU time the server's process tree and the PostgreSQL backends of database NAME
//! used in the timed window.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

const API: &str = "/api/2.0/mlflow";
/// Upper bound for one request; a slower answer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// command line

struct Args {
    values: HashMap<String, String>,
    labels: Vec<(String, String)>,
}

impl Args {
    fn parse(raw: &[String]) -> Res<Self> {
        let mut values = HashMap::new();
        let mut labels = Vec::new();
        let mut it = raw.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let value = it
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?
                .clone();
            if name == "label" {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--label {value:?}: expected k=v"))?;
                labels.push((k.to_owned(), v.to_owned()));
            } else {
                values.insert(name.to_owned(), value);
            }
        }
        Ok(Self { values, labels })
    }

    fn str(&self, name: &str) -> Res<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("missing --{name}"))
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Res<T> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} {v:?}: not a number")),
        }
    }

    /// `--rate R`: each client sends at most R requests per second (default: as fast as answered).
    fn pace(&self) -> Res<Option<Duration>> {
        match self.values.get("rate") {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(rate) if rate > 0.0 => Ok(Some(Duration::from_secs_f64(1.0 / rate))),
                _ => Err(format!("--rate {v:?}: expected requests per second > 0")),
            },
        }
    }

    fn target(&self) -> Res<Target> {
        Target::parse(self.str("url")?)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
}

impl Target {
    /// `http://127.0.0.1:PORT` (any 127.0.0.0/8 address, `localhost` or `[::1]`); nothing else.
    fn parse(url: &str) -> Res<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs"))?
            .trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{url}: needs an explicit port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{url}: bad port"))?;
        let ip: IpAddr = match host {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            h => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("{url}: host must be a loopback IP address"))?,
        };
        if !ip.is_loopback() {
            return Err(format!(
                "{url}: refusing a non-loopback target (benchmark traffic stays on this machine)"
            ));
        }
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            host: rest.to_owned(),
        })
    }
}

/// One client connection, kept alive across requests; reopened when the server closes it.
struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections this client opened (1 when the server honours keep-alive).
    opened: u64,
}

struct Reply {
    status: StatusCode,
    body: Bytes,
}

impl Conn {
    fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            sender: None,
            opened: 0,
        }
    }

    async fn connect(&mut self) -> Res<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.target.addr))?;
        // urllib3 (under the mlflow client) sets TCP_NODELAY too.
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.opened += 1;
        Ok(sender)
    }

    async fn send(&mut self, method: Method, path: &str, body: Option<Bytes>) -> Res<Reply> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(method, path, body)).await {
            Ok(result) => result,
            Err(_) => {
                self.sender = None;
                Err(format!("{path}: no answer within {REQUEST_TIMEOUT:?}"))
            }
        }
    }

    async fn send_inner(&mut self, method: Method, path: &str, body: Option<Bytes>) -> Res<Reply> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.target.host)
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let close = response
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{path}: reading the body: {e}"))?
            .to_bytes();
        if !close {
            self.sender = Some(sender);
        }
        Ok(Reply { status, body })
    }

    /// POST a JSON body and expect 200 with a JSON answer.
    async fn post_json(&mut self, path: &str, body: &Value) -> Res<Value> {
        let reply = self
            .send(Method::POST, path, Some(Bytes::from(body.to_string())))
            .await?;
        if reply.status != StatusCode::OK {
            return Err(format!(
                "POST {path} -> {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(400)])
            ));
        }
        if reply.body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&reply.body).map_err(|e| format!("POST {path}: bad JSON: {e}"))
    }
}

fn error_text(reply: &Reply) -> String {
    format!(
        "HTTP {} {}",
        reply.status,
        String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
    )
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Deterministic xorshift so both servers get identical data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [0, 1) with 4 decimals (short JSON, exact round trip).
    fn unit(&mut self) -> f64 {
        (self.next_u64() % 10_000) as f64 / 10_000.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Experiment names must be unique per database: time in nanoseconds and our pid.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency_summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "count": ms.len(),
        "p50_ms": round3(percentile(&ms, 50.0)),
        "p90_ms": round3(percentile(&ms, 90.0)),
        "p99_ms": round3(percentile(&ms, 99.0)),
        "max_ms": round3(ms.last().copied().unwrap_or(f64::NAN)),
        "mean_ms": round3(if ms.is_empty() { f64::NAN } else { ms.iter().sum::<f64>() / ms.len() as f64 }),
    })
}

fn round3(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

async fn create_experiment(conn: &mut Conn, name: &str) -> Res<String> {
    let answer = conn
        .post_json(
            &format!("{API}/experiments/create"),
            &json!({ "name": name }),
        )
        .await?;
    answer["experiment_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("experiments/create answered {answer}"))
}

async fn create_run(conn: &mut Conn, body: &Value) -> Res<String> {
    let answer = conn.post_json(&format!("{API}/runs/create"), body).await?;
    answer["run"]["info"]["run_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("runs/create answered {answer}"))
}

/// CPU time used by the server under test and by the PostgreSQL backends serving its database,
/// read from /proc before and after a timed window: unlike throughput it hardly depends on what
/// else runs on the machine. Backends that exit inside the window are missed (the servers keep
/// pooled connections, so this is rare).
struct CpuWatch {
    server_pid: Option<u32>,
    db: Option<String>,
    ticks_per_s: f64,
}

#[derive(Clone, Copy)]
struct CpuSnapshot {
    server_s: f64,
    db_s: f64,
}

impl CpuWatch {
    fn from_args(args: &Args) -> Res<Self> {
        Ok(Self {
            server_pid: match args.values.get("server-pid") {
                Some(p) => Some(
                    p.parse()
                        .map_err(|_| "--server-pid: not a number".to_owned())?,
                ),
                None => None,
            },
            db: args.values.get("db").cloned(),
            ticks_per_s: args.num("clk-tck", 100.0)?,
        })
    }

    fn snapshot(&self) -> Option<CpuSnapshot> {
        if self.server_pid.is_none() && self.db.is_none() {
            return None;
        }
        let table = proc_table();
        let mut server = 0_u64;
        if let Some(root) = self.server_pid {
            for pid in descendants(&table, root) {
                server += table.get(&pid).map_or(0, |p| p.ticks);
            }
        }
        let mut db = 0_u64;
        if let Some(name) = &self.db {
            for p in table.values() {
                // backend titles: "postgres: USER DB HOST(PORT) STATE"
                if p.cmdline.starts_with("postgres: ")
                    && p.cmdline.split_whitespace().nth(2) == Some(name.as_str())
                {
                    db += p.ticks;
                }
            }
        }
        Some(CpuSnapshot {
            server_s: server as f64 / self.ticks_per_s,
            db_s: db as f64 / self.ticks_per_s,
        })
    }
}

/// CPU used between two snapshots, also per request.
fn cpu_report(start: Option<CpuSnapshot>, end: Option<CpuSnapshot>, requests: u64) -> Value {
    match (start, end) {
        (Some(a), Some(b)) => {
            let server = (b.server_s - a.server_s).max(0.0);
            let db = (b.db_s - a.db_s).max(0.0);
            let per = |x: f64| {
                if requests > 0 {
                    round3(x * 1000.0 / requests as f64)
                } else {
                    Value::Null
                }
            };
            json!({
                "server_s": round3(server),
                "db_s": round3(db),
                "server_ms_per_request": per(server),
                "db_ms_per_request": per(db),
            })
        }
        _ => Value::Null,
    }
}

struct ProcInfo {
    ppid: u32,
    comm: String,
    ticks: u64,
    cmdline: String,
}

/// Every process: parent, name, utime+stime (clock ticks), command line.
fn proc_table() -> HashMap<u32, ProcInfo> {
    let mut table = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime ..."
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        table.insert(
            pid,
            ProcInfo {
                ppid: num(1) as u32,
                comm,
                ticks: num(11) + num(12),
                cmdline,
            },
        );
    }
    table
}

/// `root` and all its descendants, parents first.
fn descendants(table: &HashMap<u32, ProcInfo>, root: u32) -> Vec<u32> {
    if !table.contains_key(&root) {
        return Vec::new();
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        let mut children: Vec<u32> = table
            .iter()
            .filter(|(_, info)| info.ppid == p)
            .map(|(c, _)| *c)
            .collect();
        children.sort_unstable();
        tree.extend(children);
        i += 1;
    }
    tree
}

/// What one load client did.
#[derive(Default)]
struct ClientStats {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_ms: Vec<f64>,
    opened: u64,
    finished: Option<Instant>,
}

/// Runs `clients` closed-loop clients, each sending its own pre-serialised bodies to `path` in
/// order until they run out or `duration` has passed since the common start. The first
/// `warmup` bodies of each client go out before the clock starts (a cold server worker's first
/// requests are not what this measures); their failures count as errors all the same.
async fn closed_loop(
    target: &Target,
    path: &str,
    bodies: Vec<Vec<Bytes>>,
    warmup: usize,
    duration: Duration,
    pace: Option<Duration>,
    cpu: &CpuWatch,
) -> (Vec<ClientStats>, Instant, Option<CpuSnapshot>) {
    let barrier = Arc::new(Barrier::new(bodies.len() + 1));
    let start_cell = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::new();
    for client_bodies in bodies {
        let target = target.clone();
        let path = path.to_owned();
        let barrier = barrier.clone();
        let start_cell = start_cell.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            let mut stats = ClientStats::default();
            let mut bodies = client_bodies.into_iter();
            // open the connection and warm up before the clock starts
            for body in bodies.by_ref().take(warmup) {
                match conn.send(Method::POST, &path, Some(body)).await {
                    Ok(reply) if reply.status == StatusCode::OK => {}
                    Ok(reply) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert_with(|| error_text(&reply));
                    }
                    Err(e) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert(e);
                    }
                }
            }
            // A server that closed the connection after the warm-up (gunicorn's sync workers
            // close after every answer) gets the next one with the first timed request, as it
            // does for every other: an idle connection opened here would hold a sync worker
            // until all clients reach the barrier, and with more clients than workers the
            // others' warm-up requests could not be served until gunicorn's timeout (120 s).
            barrier.wait().await;
            let start = *start_cell.get_or_init(Instant::now);
            let deadline = start + duration;
            for (i, body) in bodies.enumerate() {
                if let Some(interval) = pace {
                    // a fixed request rate (soak): request i starts no earlier than i intervals in
                    tokio::time::sleep_until((start + interval * i as u32).into()).await;
                }
                if Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                let result = conn.send(Method::POST, &path, Some(body)).await;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                match result {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        stats.ok += 1;
                        stats.latencies_ms.push(ms);
                    }
                    Ok(reply) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert_with(|| error_text(&reply));
                    }
                    Err(e) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert(e);
                    }
                }
            }
            stats.finished = Some(Instant::now());
            stats.opened = conn.opened;
            stats
        }));
    }
    barrier.wait().await;
    let start = *start_cell.get_or_init(Instant::now);
    let cpu_start = cpu.snapshot();
    let mut all = Vec::new();
    for task in tasks {
        if let Ok(stats) = task.await {
            all.push(stats);
        }
    }
    (all, start, cpu_start)
}

fn merge(
    stats: Vec<ClientStats>,
    start: Instant,
) -> (u64, u64, Option<String>, Vec<f64>, u64, f64) {
    let mut ok = 0;
    let mut errors = 0;
    let mut first_error = None;
    let mut latencies = Vec::new();
    let mut opened = 0;
    let mut end = start;
    for s in stats {
        ok += s.ok;
        errors += s.errors;
        if first_error.is_none() {
            first_error = s.first_error;
        }
        latencies.extend(s.latencies_ms);
        opened += s.opened;
        if let Some(f) = s.finished {
            end = end.max(f);
        }
    }
    let elapsed = (end - start).as_secs_f64();
    (ok, errors, first_error, latencies, opened, elapsed)
}

/// Creates one experiment and one run per client (each client logs to its own run).
async fn experiment_with_runs(
    target: &Target,
    prefix: &str,
    clients: usize,
) -> Res<(String, Vec<String>)> {
    let mut conn = Conn::new(target);
    let experiment_id =
        create_experiment(&mut conn, &format!("{prefix}-{}", unique_suffix())).await?;
    let mut runs = Vec::new();
    for c in 0..clients {
        runs.push(
            create_run(
                &mut conn,
                &json!({
                    "experiment_id": experiment_id,
                    "run_name": format!("{prefix}-client-{c}"),
                    "start_time": now_ms(),
                    "user_id": "bench",
                }),
            )
            .await?,
        );
    }
    Ok((experiment_id, runs))
}

// ---------------------------------------------------------------------------------------------
// measurements

const METRIC_KEYS: [&str; 20] = [
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "grad_norm",
    "precision",
    "recall",
    "f1",
    "auc",
    "throughput",
    "epoch_time",
    "gpu_util",
    "mem_used",
    "top5",
    "bleu",
    "perplexity",
    "kl",
    "entropy",
    "reward",
];

/// Untimed requests per client before the clock starts.
const LOG_BATCH_WARMUP: usize = 1;
const LOG_METRIC_WARMUP: usize = 5;

/// log-batch: `clients` clients, each on its own run, each request `metrics` points over `keys`
/// metric keys (`metrics / keys` consecutive steps per key), like a training loop that buffers.
async fn log_batch(args: &Args) -> Res<Value> {
    let target = args.target()?;
    let clients: usize = args.num("clients", 8)?;
    let metrics: usize = args.num("metrics", 1000)?;
    let keys: usize = args.num("keys", 10)?.clamp(1, METRIC_KEYS.len());
    let requests: usize = args.num("requests", 300)?;
    let duration = Duration::from_secs_f64(args.num("duration", 20.0)?);
    let (experiment_id, runs) = experiment_with_runs(&target, "bench-log-batch", clients).await?;
    let steps_per_request = metrics.div_ceil(keys);
    let ts0 = now_ms();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut bodies = Vec::new();
    for run in &runs {
        let mut mine = Vec::with_capacity(requests + LOG_BATCH_WARMUP);
        for r in 0..requests + LOG_BATCH_WARMUP {
            let mut s = String::with_capacity(metrics * 72 + 64);
            let _ = write!(s, "{{\"run_id\":\"{run}\",\"metrics\":[");
            let mut n = 0;
            'fill: for k in 0..steps_per_request {
                let step = r * steps_per_request + k;
                for key in METRIC_KEYS.iter().take(keys) {
                    if n == metrics {
                        break 'fill;
                    }
                    if n > 0 {
                        s.push(',');
                    }
                    let _ = write!(
                        s,
                        "{{\"key\":\"{key}\",\"value\":{},\"timestamp\":{},\"step\":{step}}}",
                        rng.unit(),
                        ts0 + step as i64
                    );
                    n += 1;
                }
            }
            s.push_str("],\"params\":[],\"tags\":[]}");
            mine.push(Bytes::from(s));
        }
        bodies.push(mine);
    }
    let body_bytes = bodies.first().and_then(|b| b.first()).map_or(0, Bytes::len);
    let path = format!("{API}/runs/log-batch");
    let cpu = CpuWatch::from_args(args)?;
    let (stats, start, cpu_start) = closed_loop(
        &target,
        &path,
        bodies,
        LOG_BATCH_WARMUP,
        duration,
        args.pace()?,
        &cpu,
    )
    .await;
    let cpu_end = cpu.snapshot();
    let (ok, errors, first_error, latencies, opened, elapsed) = merge(stats, start);
    let points = ok * metrics as u64;
    Ok(json!({
        "measure": "log-batch",
        "experiment_id": experiment_id,
        "clients": clients,
        "metrics_per_request": metrics,
        "metric_keys": keys,
        "body_bytes": body_bytes,
        "requests_ok": ok,
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": round3(elapsed),
        "points_per_s": round3(points as f64 / elapsed),
        "cpu": cpu_report(cpu_start, cpu_end, ok),
        "requests_per_s": round3(ok as f64 / elapsed),
        "connections_opened": opened,
        "latency": latency_summary(latencies),
    }))
}

/// The single-point logging measures: one value per request, as `mlflow.log_metric`,
/// `mlflow.log_param` and `mlflow.set_tag` in a training loop send them.
#[derive(Clone, Copy)]
enum SinglePoint {
    /// `runs/log-metric`: step `i` of the `loss` metric.
    Metric,
    /// `runs/log-parameter`: a new key per request (a param cannot change its value).
    Param,
    /// `runs/set-tag`: the same key set again and again (the last value wins).
    Tag,
}

impl SinglePoint {
    fn measure(self) -> &'static str {
        match self {
            SinglePoint::Metric => "log-metric",
            SinglePoint::Param => "log-param",
            SinglePoint::Tag => "set-tag",
        }
    }

    fn path(self) -> &'static str {
        match self {
            SinglePoint::Metric => "runs/log-metric",
            SinglePoint::Param => "runs/log-parameter",
            SinglePoint::Tag => "runs/set-tag",
        }
    }

    /// The body of request `i` of a client logging to `run`.
    fn body(self, run: &str, i: usize, rng: &mut Rng, ts0: i64) -> Bytes {
        Bytes::from(match self {
            SinglePoint::Metric => format!(
                "{{\"run_id\":\"{run}\",\"key\":\"loss\",\"value\":{},\"timestamp\":{},\"step\":{i}}}",
                rng.unit(),
                ts0 + i as i64
            ),
            SinglePoint::Param => format!(
                "{{\"run_id\":\"{run}\",\"key\":\"param_{i}\",\"value\":\"{}\"}}",
                rng.unit()
            ),
            SinglePoint::Tag => format!(
                "{{\"run_id\":\"{run}\",\"key\":\"progress\",\"value\":\"step {i}\"}}"
            ),
        })
    }
}

/// log-metric, log-param, set-tag: one value per request, `clients` clients each on its own run.
async fn single_point(args: &Args, kind: SinglePoint) -> Res<Value> {
    let target = args.target()?;
    let clients: usize = args.num("clients", 8)?;
    let requests: usize = args.num("requests", 20_000)?;
    let duration = Duration::from_secs_f64(args.num("duration", 10.0)?);
    let measure = kind.measure();
    let (experiment_id, runs) = experiment_with_runs(&target, &format!("bench-{measure}"), clients).await?;
    let ts0 = now_ms();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let bodies: Vec<Vec<Bytes>> = runs
        .iter()
        .map(|run| {
            (0..requests + LOG_METRIC_WARMUP)
                .map(|i| kind.body(run, i, &mut rng, ts0))
                .collect()
        })
        .collect();
    let path = format!("{API}/{}", kind.path());
    let cpu = CpuWatch::from_args(args)?;
    let (stats, start, cpu_start) = closed_loop(
        &target,
        &path,
        bodies,
        LOG_METRIC_WARMUP,
        duration,
        args.pace()?,
        &cpu,
    )
    .await;
    let cpu_end = cpu.snapshot();
    let (ok, errors, first_error, latencies, opened, elapsed) = merge(stats, start);
    Ok(json!({
        "measure": measure,
        "experiment_id": experiment_id,
        "clients": clients,
        "requests_ok": ok,
        "cpu": cpu_report(cpu_start, cpu_end, ok),
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": round3(elapsed),
        "requests_per_s": round3(ok as f64 / elapsed),
        "connections_opened": opened,
        "latency": latency_summary(latencies),
    }))
}

const MODELS: [&str; 4] = ["resnet", "vit", "mlp", "xgboost"];
const OPTIMIZERS: [&str; 2] = ["adam", "sgd"];
const LRS: [&str; 5] = ["0.1", "0.03", "0.01", "0.003", "0.001"];
const BATCH_SIZES: [&str; 4] = ["16", "32", "64", "128"];
const TEAMS: [&str; 3] = ["vision", "nlp", "tabular"];
const STAGES: [&str; 2] = ["dev", "prod"];

const SEED_BASE_TIME: i64 = 1_700_000_000_000;

/// One seeded run, a pure function of its index: every server gets the same content.
struct SeedRun {
    name: String,
    start_time: i64,
    /// (key, value) without `mlflow.runName`, which the server derives from the run name
    tags: Vec<(&'static str, String)>,
    params: Vec<(&'static str, String)>,
    /// (key, value, timestamp, step)
    metrics: Vec<(&'static str, f64, i64, i64)>,
}

fn seed_run(i: usize) -> SeedRun {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ ((i as u64 + 1) * 0x9E37_79B9));
    let start_time = SEED_BASE_TIME + i as i64 * 1000;
    let tags = vec![
        ("team", rng.pick(&TEAMS).to_owned()),
        ("stage", rng.pick(&STAGES).to_owned()),
        ("mlflow.user", "bench".to_owned()),
    ];
    let accuracy = rng.unit();
    let loss = rng.unit() * 2.0;
    let mut metrics = Vec::new();
    for step in 0..3_i64 {
        let t = start_time + 1000 + step;
        let decay = (3 - step) as f64;
        metrics.push((
            "accuracy",
            (accuracy / decay * 10000.0).round() / 10000.0,
            t,
            step,
        ));
        metrics.push(("loss", (loss * decay * 10000.0).round() / 10000.0, t, step));
        metrics.push(("f1", rng.unit(), t, step));
        metrics.push(("epoch_time", 10.0 + rng.unit(), t, step));
    }
    let params = vec![
        ("model", rng.pick(&MODELS).to_owned()),
        ("optimizer", rng.pick(&OPTIMIZERS).to_owned()),
        ("lr", rng.pick(&LRS).to_owned()),
        ("batch_size", rng.pick(&BATCH_SIZES).to_owned()),
        ("seed", i.to_string()),
    ];
    SeedRun {
        name: format!("run-{i:05}"),
        start_time,
        tags,
        params,
        metrics,
    }
}

/// seed: one experiment of `runs` runs through the server's API (per run: runs/create carrying
/// the tags, one log-batch carrying params and metrics). Per run 5 params, 3 tags
/// (+ mlflow.runName), 4 metrics at 3 steps (12 points).
async fn seed(args: &Args) -> Res<Value> {
    let target = args.target()?;
    let total: usize = args.num("runs", 10_000)?;
    let clients: usize = args.num("clients", 8)?.max(1);
    let name = args
        .values
        .get("experiment-name")
        .cloned()
        .unwrap_or_else(|| format!("bench-search-{}", unique_suffix()));
    let mut conn = Conn::new(&target);
    let experiment_id = create_experiment(&mut conn, &name).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let target = target.clone();
        let experiment_id = experiment_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            let mut i = c;
            while i < total {
                let run = seed_run(i);
                let tags: Vec<Value> = run.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                let run_id = create_run(
                    &mut conn,
                    &json!({
                        "experiment_id": experiment_id,
                        "run_name": run.name,
                        "user_id": "bench",
                        "start_time": run.start_time,
                        "tags": tags,
                    }),
                )
                .await?;
                let params: Vec<Value> = run.params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                let metrics: Vec<Value> = run
                    .metrics
                    .iter()
                    .map(|(k, v, t, step)| json!({"key": k, "value": v, "timestamp": t, "step": step}))
                    .collect();
                conn.post_json(
                    &format!("{API}/runs/log-batch"),
                    &json!({"run_id": run_id, "params": params, "metrics": metrics, "tags": []}),
                )
                .await?;
                i += clients;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(json!({
        "measure": "seed",
        "method": "api",
        "experiment_id": experiment_id,
        "experiment_name": name,
        "runs": total,
        "elapsed_s": round3(started.elapsed().as_secs_f64()),
    }))
}

/// seed-sql: the same runs as `seed`, as PostgreSQL COPY statements written to stdout for psql,
/// into **MLflow's** schema (`--schema mlflow`, the default: what MLflow 3.17.2's SQLAlchemy
/// store writes for runs/create + log-batch: runs, tags incl. mlflow.runName, params, metrics,
/// latest_metrics) or **ferroflow's** (`--schema ferroflow --artifact-location L`: the rows its
/// store writes for the same calls, run artifact URIs under the experiment's location L). The
/// experiment must exist (create it through the API, which also makes the server migrate its
/// schema). Seeding through the API takes many minutes on 2 cores for MLflow (and for a million
/// runs, for ferroflow); the search measurement does not depend on how the rows got there.
/// Streams: a million runs are ~26 million rows.
fn seed_sql(args: &Args) -> Res<Value> {
    use std::io::Write as _;
    let total: usize = args.num("runs", 10_000)?;
    let experiment_id: i64 = args.num("experiment-id", -1)?;
    if experiment_id < 0 {
        return Err("missing --experiment-id".into());
    }
    let ferroflow = match args.values.get("schema").map_or("mlflow", String::as_str) {
        "mlflow" => false,
        "ferroflow" => true,
        other => return Err(format!("--schema {other:?}: mlflow or ferroflow")),
    };
    let artifact_location = if ferroflow {
        args.str("artifact-location")?
            .trim_end_matches('/')
            .to_owned()
    } else {
        format!("mlflow-artifacts:/{experiment_id}")
    };
    let mut state: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let ids: Vec<String> = (0..total)
        .map(|_| {
            let mut r = Rng(state);
            let a = r.next_u64();
            let b = r.next_u64();
            state = r.0;
            format!("{a:016x}{b:016x}")
        })
        .collect();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let io = |e: std::io::Error| e.to_string();
    // each table in one pass over the runs; seed_run is cheap to recompute
    let table = |out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>,
                 header: &str,
                 row: &dyn Fn(&mut String, &str, &SeedRun)|
     -> Res<()> {
        writeln!(out, "{header}").map_err(io)?;
        let mut line = String::new();
        for (i, id) in ids.iter().enumerate() {
            line.clear();
            row(&mut line, id, &seed_run(i));
            out.write_all(line.as_bytes()).map_err(io)?;
        }
        writeln!(out, "\\.").map_err(io)
    };
    writeln!(out, "BEGIN;").map_err(io)?;
    if ferroflow {
        table(
            &mut out,
            "COPY runs (run_uuid, name, experiment_id, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri) FROM stdin;",
            &|l, id, run| {
                let _ = writeln!(
                    l,
                    "{id}\t{}\t{experiment_id}\tbench\tRUNNING\t{}\t\\N\tactive\t{artifact_location}/{id}/artifacts",
                    run.name, run.start_time
                );
            },
        )?;
    } else {
        table(
            &mut out,
            "COPY runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time) FROM stdin;",
            &|l, id, run| {
                let _ = writeln!(
                    l,
                    "{id}\t{}\tUNKNOWN\t\t\tbench\tRUNNING\t{}\t\\N\t\tactive\t{artifact_location}/{id}/artifacts\t{experiment_id}\t\\N",
                    run.name, run.start_time
                );
            },
        )?;
    }
    table(
        &mut out,
        "COPY tags (key, value, run_uuid) FROM stdin;",
        &|l, id, run| {
            for (k, v) in &run.tags {
                let _ = writeln!(l, "{k}\t{v}\t{id}");
            }
            let _ = writeln!(l, "mlflow.runName\t{}\t{id}", run.name);
        },
    )?;
    table(
        &mut out,
        "COPY params (key, value, run_uuid) FROM stdin;",
        &|l, id, run| {
            for (k, v) in &run.params {
                let _ = writeln!(l, "{k}\t{v}\t{id}");
            }
        },
    )?;
    table(
        &mut out,
        "COPY metrics (key, value, timestamp, run_uuid, step, is_nan) FROM stdin;",
        &|l, id, run| {
            for (k, v, t, step) in &run.metrics {
                let _ = writeln!(l, "{k}\t{v}\t{t}\t{id}\t{step}\tf");
            }
        },
    )?;
    table(
        &mut out,
        "COPY latest_metrics (key, value, timestamp, step, is_nan, run_uuid) FROM stdin;",
        &|l, id, run| {
            // the greatest (step, timestamp, value) per key: here simply the last step
            let last = run.metrics.iter().map(|m| m.3).max().unwrap_or(0);
            for (k, v, t, step) in run.metrics.iter().filter(|m| m.3 == last) {
                let _ = writeln!(l, "{k}\t{v}\t{t}\t{step}\tf\t{id}");
            }
        },
    )?;
    writeln!(out, "COMMIT;").map_err(io)?;
    out.flush().map_err(io)?;
    Ok(Value::Null)
}

/// The search mix; every query is a POST /runs/search like the mlflow client sends.
fn search_queries(experiment_id: &str, max_results: u64) -> Vec<(&'static str, Value)> {
    vec![
        (
            "default order",
            json!({"experiment_ids": [experiment_id], "max_results": max_results, "run_view_type": "ACTIVE_ONLY"}),
        ),
        (
            "metric filter + metric order",
            json!({"experiment_ids": [experiment_id], "max_results": max_results, "run_view_type": "ACTIVE_ONLY",
                   "filter": "metrics.accuracy > 0.5", "order_by": ["metrics.loss ASC"]}),
        ),
        (
            "param filter",
            json!({"experiment_ids": [experiment_id], "max_results": max_results, "run_view_type": "ACTIVE_ONLY",
                   "filter": "params.model = 'vit' and params.optimizer = 'adam'"}),
        ),
    ]
}

/// The experiments/search mix (`loadgen search --kind experiments`): the experiments page's
/// default (active experiments, newest first, as the UI asks) and a name filter ordered by name.
fn experiment_search_queries(max_results: u64) -> Vec<(&'static str, Value)> {
    vec![
        (
            "experiments: default order",
            json!({"max_results": max_results, "view_type": "ACTIVE_ONLY", "order_by": ["last_update_time DESC"]}),
        ),
        (
            "experiments: name filter, name order",
            json!({"max_results": max_results, "view_type": "ACTIVE_ONLY",
                   "filter": "name LIKE 'scale-exp-05%'", "order_by": ["name ASC"]}),
        ),
    ]
}

/// search: `clients` clients cycle through the query mix (each starting at a different query)
/// until `queries` are done in all or `duration` has passed.
///
/// `--kind experiments` searches experiments instead (no --experiment-id): the mix of
/// [`experiment_search_queries`].
async fn search(args: &Args) -> Res<Value> {
    let target = args.target()?;
    let max_results: u64 = args.num("max-results", 100)?;
    let clients: usize = args.num("clients", 4)?.max(1);
    let queries: usize = args.num("queries", 400)?;
    let duration = Duration::from_secs_f64(args.num("duration", 15.0)?);
    let (experiment_id, mix, path) = match args.values.get("kind").map_or("runs", String::as_str) {
        "runs" => {
            let experiment_id = args.str("experiment-id")?.to_owned();
            let mix = search_queries(&experiment_id, max_results);
            (experiment_id, mix, format!("{API}/runs/search"))
        }
        "experiments" => (
            String::new(),
            experiment_search_queries(max_results),
            format!("{API}/experiments/search"),
        ),
        other => return Err(format!("--kind {other:?}: runs or experiments")),
    };

    // warm-up (untimed): each query once; remember how many runs each returns
    let mut conn = Conn::new(&target);
    let mut returned = Vec::new();
    for (_, q) in &mix {
        let answer = conn.post_json(&path, q).await?;
        returned.push(items_returned(answer.to_string().as_bytes()));
    }

    let per_client = queries.div_ceil(clients);
    let bodies: Vec<Vec<Bytes>> = (0..clients)
        .map(|c| {
            (0..per_client)
                .map(|k| Bytes::from(mix[(c + k) % mix.len()].1.to_string()))
                .collect()
        })
        .collect();
    // per-query latencies: rerun the same loop but keep the query index alongside
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for (c, client_bodies) in bodies.into_iter().enumerate() {
        let target = target.clone();
        let path = path.clone();
        let barrier = barrier.clone();
        let n_mix = mix.len();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            if let Ok(sender) = conn.connect().await {
                conn.sender = Some(sender);
            }
            let mut out: Vec<(usize, f64)> = Vec::new();
            let mut errors = 0_u64;
            let mut first_error = None;
            barrier.wait().await;
            let start = Instant::now();
            for (k, body) in client_bodies.into_iter().enumerate() {
                if start.elapsed() >= duration {
                    break;
                }
                let t0 = Instant::now();
                let result = conn.send(Method::POST, &path, Some(body)).await;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                match result {
                    Ok(reply) if reply.status == StatusCode::OK => out.push(((c + k) % n_mix, ms)),
                    Ok(reply) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| error_text(&reply));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (out, errors, first_error, Instant::now(), conn.opened)
        }));
    }
    let cpu = CpuWatch::from_args(args)?;
    barrier.wait().await;
    let start = Instant::now();
    let cpu_start = cpu.snapshot();
    let mut all: Vec<(usize, f64)> = Vec::new();
    let mut errors = 0;
    let mut first_error: Option<String> = None;
    let mut end = start;
    let mut opened = 0;
    for task in tasks {
        let (out, e, fe, finished, o) = task.await.map_err(|e| e.to_string())?;
        all.extend(out);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
        end = end.max(finished);
        opened += o;
    }
    let cpu_end = cpu.snapshot();
    let elapsed = (end - start).as_secs_f64();
    let per_query: Vec<Value> = mix
        .iter()
        .enumerate()
        .map(|(i, (name, q))| {
            let lat: Vec<f64> = all
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, ms)| *ms)
                .collect();
            json!({
                "query": name,
                "filter": q.get("filter"),
                "order_by": q.get("order_by"),
                "runs_returned": returned[i],
                "latency": latency_summary(lat),
            })
        })
        .collect();
    let count = all.len();
    Ok(json!({
        "measure": "search",
        "experiment_id": experiment_id,
        "max_results": max_results,
        "clients": clients,
        "queries_ok": count,
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": round3(elapsed),
        "queries_per_s": round3(count as f64 / elapsed),
        "cpu": cpu_report(cpu_start, cpu_end, count as u64),
        "connections_opened": opened,
        "latency": latency_summary(all.into_iter().map(|(_, ms)| ms).collect()),
        "per_query": per_query,
    }))
}

// ---------------------------------------------------------------------------------------------
// search right after heavy logging (e2e/bench/search-after-load.sh)

const SWEEP_MODELS: [&str; 4] = ["rf", "gbm", "svm", "mlp"];
const SWEEP_METRICS: [&str; 5] = ["acc", "loss", "f1", "auc", "rmse"];

/// sweep: what a hyper-parameter sweep leaves behind. One experiment of `runs` runs, each
/// created with 3 tags (`team`, `stage`, `mlflow.user`), then one log-batch of 5 params
/// (`model`, `max_depth`, `n_estimators`, `learning_rate`, `seed`) and 5 metrics (`acc`, `loss`,
/// `f1`, `auc`, `rmse`); then `registered-models` registered models with `versions` versions
/// each (from the sweep's runs, tagged), and `logged-models` logged models of the experiment
/// with params and tags. Content is a pure function of the indexes, as in `seed`.
async fn sweep(args: &Args) -> Res<Value> {
    let target = args.target()?;
    let total: usize = args.num("runs", 2000)?;
    let clients: usize = args.num("clients", 8)?.max(1);
    let registered: usize = args.num("registered-models", 50)?;
    let versions: usize = args.num("versions", 4)?;
    let logged: usize = args.num("logged-models", 200)?;
    let started = Instant::now();
    let mut conn = Conn::new(&target);
    let experiment_id = create_experiment(&mut conn, &format!("sweep-{}", unique_suffix())).await?;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let target = target.clone();
        let experiment_id = experiment_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            let mut ids = Vec::new();
            let mut i = c;
            while i < total {
                let mut rng = Rng(0xA076_1D64_78BD_642F ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9));
                let tags = json!([
                    {"key": "team", "value": rng.pick(&TEAMS)},
                    {"key": "stage", "value": rng.pick(&STAGES)},
                    {"key": "mlflow.user", "value": "bench"},
                ]);
                let start_time = SEED_BASE_TIME + i as i64 * 1000;
                let run_id = create_run(
                    &mut conn,
                    &json!({"experiment_id": experiment_id, "run_name": format!("sweep-{i:05}"),
                            "user_id": "bench", "start_time": start_time, "tags": tags}),
                )
                .await?;
                let params = json!([
                    {"key": "model", "value": rng.pick(&SWEEP_MODELS)},
                    {"key": "max_depth", "value": (2 + rng.next_u64() % 14).to_string()},
                    {"key": "n_estimators", "value": (50 * (1 + rng.next_u64() % 20)).to_string()},
                    {"key": "learning_rate", "value": rng.pick(&LRS)},
                    {"key": "seed", "value": i.to_string()},
                ]);
                let metrics: Vec<Value> = SWEEP_METRICS
                    .iter()
                    .map(|key| json!({"key": key, "value": rng.unit(), "timestamp": start_time + 1000, "step": 0}))
                    .collect();
                conn.post_json(
                    &format!("{API}/runs/log-batch"),
                    &json!({"run_id": run_id, "params": params, "metrics": metrics, "tags": []}),
                )
                .await?;
                ids.push((i, run_id));
                i += clients;
            }
            Ok::<Vec<(usize, String)>, String>(ids)
        }));
    }
    let mut run_ids = Vec::with_capacity(total);
    for task in tasks {
        run_ids.extend(task.await.map_err(|e| e.to_string())??);
    }
    run_ids.sort();
    let runs_elapsed = started.elapsed().as_secs_f64();

    // registry and logged models: fewer objects, one client each (the order of versions matters)
    for m in 0..registered {
        let name = format!("sweep-model-{m:03}");
        conn.post_json(
            &format!("{API}/registered-models/create"),
            &json!({"name": name, "tags": [{"key": "team", "value": TEAMS[m % TEAMS.len()]}]}),
        )
        .await?;
        for v in 0..versions {
            let Some((_, run_id)) = run_ids.get((m * versions + v) % run_ids.len().max(1)) else {
                break;
            };
            conn.post_json(
                &format!("{API}/model-versions/create"),
                &json!({"name": name, "source": format!("runs:/{run_id}/model"), "run_id": run_id,
                        "tags": [{"key": "stage", "value": STAGES[v % STAGES.len()]}]}),
            )
            .await?;
        }
    }
    for k in 0..logged {
        let run_id = run_ids
            .get(k % run_ids.len().max(1))
            .map(|(_, id)| id.clone());
        conn.post_json(
            &format!("{API}/logged-models"),
            &json!({"experiment_id": experiment_id, "name": format!("sweep-logged-{k:04}"),
                    "source_run_id": run_id,
                    "params": [{"key": "model", "value": SWEEP_MODELS[k % SWEEP_MODELS.len()]}],
                    "tags": [{"key": "team", "value": TEAMS[k % TEAMS.len()]}]}),
        )
        .await?;
    }
    Ok(json!({
        "measure": "sweep",
        "experiment_id": experiment_id,
        "runs": total,
        "registered_models": registered,
        "model_versions": registered * versions,
        "logged_models": logged,
        "runs_elapsed_s": round3(runs_elapsed),
        "elapsed_s": round3(started.elapsed().as_secs_f64()),
    }))
}

/// One search path of the search-after-load benchmark: (name, method, path, JSON body or None).
fn sweep_searches(experiment_id: &str) -> Vec<(&'static str, Method, String, Option<Value>)> {
    let runs = format!("{API}/runs/search");
    let runs_query = |extra: Value| {
        let mut body = json!({"experiment_ids": [experiment_id], "max_results": 100, "run_view_type": "ACTIVE_ONLY"});
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        Some(body)
    };
    vec![
        (
            "runs: metric + param filter, metric order",
            Method::POST,
            runs.clone(),
            runs_query(
                json!({"filter": "metrics.acc > 0.5 and params.model = 'rf'", "order_by": ["metrics.acc DESC"]}),
            ),
        ),
        (
            "runs: metric filter, param order",
            Method::POST,
            runs.clone(),
            runs_query(
                json!({"filter": "metrics.loss < 0.5", "order_by": ["params.n_estimators DESC"]}),
            ),
        ),
        (
            "runs: tag filter",
            Method::POST,
            runs.clone(),
            runs_query(json!({"filter": "tags.team = 'vision' and tags.stage = 'prod'"})),
        ),
        (
            "runs: default order",
            Method::POST,
            runs,
            runs_query(json!({})),
        ),
        (
            "experiments/search",
            Method::POST,
            format!("{API}/experiments/search"),
            Some(
                json!({"max_results": 100, "filter": "name LIKE 'sweep-%'", "order_by": ["last_update_time DESC"]}),
            ),
        ),
        (
            "registered-models/search",
            Method::GET,
            format!(
                "{API}/registered-models/search?filter=name%20LIKE%20%27sweep-model-01%25%27&max_results=100"
            ),
            None,
        ),
        (
            "model-versions/search",
            Method::GET,
            format!(
                "{API}/model-versions/search?filter=name%20%3D%20%27sweep-model-007%27&max_results=100"
            ),
            None,
        ),
        (
            "logged-models/search",
            Method::POST,
            format!("{API}/logged-models/search"),
            Some(
                json!({"experiment_ids": [experiment_id], "filter": "params.model = 'rf'", "max_results": 100,
                        "order_by": [{"field_name": "creation_timestamp", "ascending": false}]}),
            ),
        ),
    ]
}

/// How many items a search answer holds (its one top-level list).
fn items_returned(body: &[u8]) -> usize {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    map.values()
        .filter_map(Value::as_array)
        .map(Vec::len)
        .max()
        .unwrap_or(0)
}

/// search-paths: each path of [`sweep_searches`] in turn, repeated by `clients` closed-loop
/// clients for `duration` seconds (or `queries` queries), no warm-up: this measures what a user
/// meets in the first minute after heavy logging. One JSON line with a record per path.
async fn search_paths(args: &Args) -> Res<Value> {
    let target = args.target()?;
    let experiment_id = args.str("experiment-id")?.to_owned();
    let clients: usize = args.num("clients", 8)?.max(1);
    let queries: usize = args.num("queries", 5000)?;
    let duration = Duration::from_secs_f64(args.num("duration", 4.0)?);
    let only: Option<usize> = args.values.get("only").and_then(|v| v.parse().ok());
    let started = Instant::now();
    let mut results = Vec::new();
    for (index, (name, method, path, body)) in
        sweep_searches(&experiment_id).into_iter().enumerate()
    {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let body = body.map(|b| Bytes::from(b.to_string()));
        let offset_s = started.elapsed().as_secs_f64();
        let loadavg_before = loadavg();
        let per_client = queries.div_ceil(clients);
        let barrier = Arc::new(Barrier::new(clients + 1));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (target, method, path, body, barrier) = (
                target.clone(),
                method.clone(),
                path.clone(),
                body.clone(),
                barrier.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::new(&target);
                if let Ok(sender) = conn.connect().await {
                    conn.sender = Some(sender);
                }
                let mut latencies = Vec::new();
                let (mut errors, mut first_error, mut returned) = (0_u64, None, 0);
                barrier.wait().await;
                let start = Instant::now();
                for _ in 0..per_client {
                    if start.elapsed() >= duration {
                        break;
                    }
                    let t0 = Instant::now();
                    let result = conn.send(method.clone(), &path, body.clone()).await;
                    let ms = t0.elapsed().as_secs_f64() * 1000.0;
                    match result {
                        Ok(reply) if reply.status == StatusCode::OK => {
                            latencies.push(ms);
                            returned = items_returned(&reply.body);
                        }
                        Ok(reply) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| error_text(&reply));
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, errors, first_error, returned, Instant::now())
            }));
        }
        barrier.wait().await;
        let start = Instant::now();
        let (mut all, mut errors, mut first_error, mut returned, mut end) =
            (Vec::new(), 0, None, 0, start);
        for task in tasks {
            let (latencies, e, fe, r, finished) = task.await.map_err(|e| e.to_string())?;
            all.extend(latencies);
            errors += e;
            first_error = first_error.or(fe);
            returned = returned.max(r);
            end = end.max(finished);
        }
        let elapsed = (end - start).as_secs_f64();
        results.push(json!({
            "path": name,
            "offset_s": round3(offset_s),
            "queries_ok": all.len(),
            "errors": errors,
            "first_error": first_error,
            "items_returned": returned,
            "queries_per_s": round3(all.len() as f64 / elapsed),
            "latency": latency_summary(all),
            "loadavg_before": loadavg_before,
            "loadavg_after": loadavg(),
        }));
    }
    Ok(json!({
        "measure": "search-paths",
        "experiment_id": experiment_id,
        "clients": clients,
        "duration_s": duration.as_secs_f64(),
        "paths": results,
    }))
}

/// keepalive: latency of a trivial GET, first `requests` times on one kept-alive connection,
/// then `requests` times each on a fresh connection (connect included).
async fn keepalive(args: &Args) -> Res<Value> {
    let target = args.target()?;
    let requests: usize = args.num("requests", 200)?;
    let path = format!("{API}/experiments/get?experiment_id=0");
    let mut errors = 0_u64;
    let mut first_error = None;
    let mut record = |result: Res<Reply>, ms: f64, into: &mut Vec<f64>| match result {
        Ok(reply) if reply.status == StatusCode::OK => into.push(ms),
        Ok(reply) => {
            errors += 1;
            first_error.get_or_insert_with(|| error_text(&reply));
        }
        Err(e) => {
            errors += 1;
            first_error.get_or_insert(e);
        }
    };

    let mut kept = Conn::new(&target);
    for _ in 0..5 {
        let _ = kept.send(Method::GET, &path, None).await; // warm-up
    }
    let opened_before = kept.opened;
    let mut kept_ms = Vec::new();
    for _ in 0..requests {
        let t0 = Instant::now();
        let result = kept.send(Method::GET, &path, None).await;
        record(result, t0.elapsed().as_secs_f64() * 1000.0, &mut kept_ms);
    }
    let kept_opened = kept.opened - opened_before;
    drop(kept);

    let mut fresh_ms = Vec::new();
    for _ in 0..requests {
        let mut conn = Conn::new(&target);
        let t0 = Instant::now();
        let result = conn.send(Method::GET, &path, None).await;
        record(result, t0.elapsed().as_secs_f64() * 1000.0, &mut fresh_ms);
    }
    let kept_summary = latency_summary(kept_ms);
    let fresh_summary = latency_summary(fresh_ms);
    let penalty = match (
        kept_summary["p50_ms"].as_f64(),
        fresh_summary["p50_ms"].as_f64(),
    ) {
        (Some(k), Some(f)) => round3(k - f),
        _ => Value::Null,
    };
    Ok(json!({
        "measure": "keepalive",
        "path": path,
        "requests": requests,
        "errors": errors,
        "first_error": first_error,
        "kept_alive": kept_summary,
        "kept_alive_connections_opened": kept_opened,
        "fresh_connection": fresh_summary,
        "penalty_p50_ms": penalty,
    }))
}

/// rss: VmRSS (and Pss) summed over `pid` and all its descendants.
fn rss(args: &Args) -> Res<Value> {
    let root: u32 = args
        .str("pid")?
        .parse()
        .map_err(|_| "--pid: not a number".to_owned())?;
    let table = proc_table();
    let tree = descendants(&table, root);
    if tree.is_empty() {
        return Err(format!("no process {root}"));
    }
    let field_kib = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut rss_kib = 0;
    let mut pss_kib = 0;
    let mut hwm_kib = 0;
    let mut processes = Vec::new();
    for pid in &tree {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let rss = field_kib(&status, "VmRSS:");
        let hwm = field_kib(&status, "VmHWM:");
        let pss = field_kib(&rollup, "Pss:");
        rss_kib += rss;
        pss_kib += pss;
        hwm_kib += hwm;
        let info = table.get(pid);
        processes.push(json!({
            "pid": pid,
            "comm": info.map(|p| p.comm.clone()),
            "cmdline": info.map(|p| p.cmdline.chars().take(300).collect::<String>()),
            "rss_kib": rss, "pss_kib": pss, "hwm_kib": hwm,
        }));
    }
    Ok(json!({
        "measure": "rss",
        "pid": root,
        "rss_mib": round3(rss_kib as f64 / 1024.0),
        "pss_mib": round3(pss_kib as f64 / 1024.0),
        "hwm_mib": round3(hwm_kib as f64 / 1024.0),
        "processes": processes,
    }))
}

// ---------------------------------------------------------------------------------------------

async fn dispatch(command: &str, args: &Args) -> Res<Value> {
    match command {
        "seed" => seed(args).await,
        "log-batch" => log_batch(args).await,
        "log-metric" => single_point(args, SinglePoint::Metric).await,
        "log-param" => single_point(args, SinglePoint::Param).await,
        "set-tag" => single_point(args, SinglePoint::Tag).await,
        "search" => search(args).await,
        "keepalive" => keepalive(args).await,
        "rss" => rss(args),
        "seed-sql" => seed_sql(args),
        "sweep" => sweep(args).await,
        "search-paths" => search_paths(args).await,
        other => Err(format!(
            "unknown command {other:?} (seed, log-batch, log-metric, log-param, set-tag, search, keepalive, rss, sweep, search-paths)"
        )),
    }
}

/// The 1-minute load average from /proc/loadavg.
fn loadavg() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(Value::Null, |v| json!(v))
}

fn main() -> std::process::ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = raw.split_first() else {
        eprintln!(
            "usage: loadgen <seed|log-batch|log-metric|log-param|set-tag|search|keepalive|rss> --url http://127.0.0.1:PORT ..."
        );
        return std::process::ExitCode::from(2);
    };
    let result = Args::parse(rest).and_then(|args| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.num("threads", 2)?)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let loadavg_before = loadavg();
        let mut value = runtime.block_on(dispatch(command, &args))?;
        if let Value::Object(map) = &mut value {
            // other work on the machine skews every number: keep the load average beside it
            map.insert("loadavg_before".into(), loadavg_before);
            map.insert("loadavg_after".into(), loadavg());
            for (k, v) in &args.labels {
                map.insert(k.clone(), Value::String(v.clone()));
            }
        }
        Ok(value)
    });
    match result {
        Ok(Value::Null) => std::process::ExitCode::SUCCESS,
        Ok(value) => {
            println!("{value}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen {command}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
