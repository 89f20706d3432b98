//! MQTT load generator for `scripts/bench-mqtt`: the same client code
//! against Redwall's team broker and against a reference broker (Mosquitto).
//!
//! Two modes, each printing one machine-readable line (`RESULT ...` or
//! `IDLE ...`, `key=value` pairs separated by spaces):
//!
//! ```text
//! mqtt_load throughput --host 127.0.0.1 --port 11883 --username U --password P \
//!     --publishers 4 --subscribers 4 --qos 0 --secs 10 --warmup 2 --payload 64 \
//!     [--rate MSGS_PER_S] [--window 100] [--stall-ms 1000] [--inflight N] \
//!     [--topic bench] [--label redwall]
//! mqtt_load idle --host 127.0.0.1 --port 11883 --username U --password P \
//!     --clients 10000 --batch 200 --hold 30 [--keepalive 60] [--label redwall]
//! mqtt_load bare --port 47303 [--workers 1]
//! mqtt_load relay --port 47304 --to 47303 [--workers 1]
//! ```
//!
//! `--workers N` sets the Tokio runtime's worker threads (default: one per
//! core). `redwall serve` runs on half the cores (at least one;
//! `REDWALL_WORKER_THREADS`), so a like-for-like bare engine takes as many.
//!
//! Throughput: M subscribers each subscribe to `{topic}/+`, then N
//! publishers each publish to `{topic}/{n}` (so every message is delivered
//! M times). Each payload carries its send time (nanoseconds on this
//! process's monotonic clock), the publisher's number and a sequence
//! number; a subscriber's latency sample is the time from that stamp to the
//! moment its event loop hands it the message. Without `--rate` every
//! publisher sends as fast as its window allows: at most `--window`
//! messages sent and not yet received by its slowest subscriber (closed
//! loop, so no broker queue fills and nothing is dropped for being slow). With
//! `--rate` the publishers together send that many messages a second
//! (paced on the clock), the window still bounding them. A publisher whose
//! window sees no delivery for `--stall-ms` writes its outstanding messages
//! off (`stalls=`; a broker that drops messages costs its publishers that
//! long each time) and goes on. `--inflight` bounds each connection's QoS 1
//! publishes not yet acknowledged by the broker (MQTT flow control; default:
//! the window). Only messages
//! stamped inside the measured window (after `--warmup`, for `--secs`)
//! count; after it, the run waits up to 5 s for every outstanding delivery,
//! and reports the missing ones as `lost`.
//!
//! Idle: `--clients` connections, opened `--batch` at a time, each waiting
//! for its CONNACK; client ids are `{client-prefix}-{n}` (the prefix
//! defaults to the username, which is what Redwall requires of several
//! connections of one broker client). It prints `IDLE ... connected=`
//! once all are connected, holds them (answering the broker's keep-alive)
//! for `--hold` seconds, disconnects them cleanly and prints `IDLE_DONE`.
//!
//! Bare (a diagnostic target, not a load): the broker engine Redwall embeds
//! (rmqtt, the same version and features) with the same listener limits
//! (`redwall_broker::Limits::default()`), anonymous, with none of Redwall's
//! hooks: no logins by the hub, no mounts, no rules. It listens on
//! 127.0.0.1:`--port` until killed. What Redwall costs beyond it is the
//! gate; what it costs beyond Mosquitto is the engine.
//!
//! Relay (a diagnostic too): a TCP relay on 127.0.0.1:`--port` to
//! 127.0.0.1:`--to`, one connection out per connection in, bytes copied
//! both ways with `tokio::io::copy_bidirectional` on TCP_NODELAY sockets:
//! the extra hop Redwall's front (`redwall_broker::front`) puts before the
//! engine, without its PROXY header and CONNECT check. In front of `bare`
//! it shows what the hop costs.
//!
//! Every error is reported on stderr and ends the process with status 1.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// The process's clock origin: payload stamps are nanoseconds since it.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Clone, Debug)]
struct Args {
    mode: String,
    host: String,
    port: u16,
    username: String,
    password: String,
    client_prefix: String,
    label: String,
    // throughput
    publishers: usize,
    subscribers: usize,
    qos: u8,
    secs: f64,
    warmup: f64,
    payload: usize,
    rate: f64,
    window: u64,
    stall_ms: u64,
    inflight: u64,
    topic: String,
    // idle
    clients: usize,
    batch: usize,
    hold: f64,
    keepalive: u64,
    // relay
    to: u16,
    workers: usize,
}

fn parse_args() -> Result<Args> {
    let mut raw = std::env::args().skip(1);
    let mode = raw
        .next()
        .ok_or("usage: mqtt_load throughput|idle --option value ...")?;
    if !matches!(mode.as_str(), "throughput" | "idle" | "bare" | "relay") {
        return Err(format!("unknown mode {mode:?}: throughput, idle, bare or relay").into());
    }
    let mut a = Args {
        mode,
        host: "127.0.0.1".into(),
        port: 1883,
        username: String::new(),
        password: String::new(),
        client_prefix: String::new(),
        label: "broker".into(),
        publishers: 4,
        subscribers: 4,
        qos: 0,
        secs: 10.0,
        warmup: 2.0,
        payload: 64,
        rate: 0.0,
        window: 100,
        stall_ms: 1000,
        inflight: 0,
        topic: "bench".into(),
        clients: 10_000,
        batch: 200,
        hold: 30.0,
        keepalive: 60,
        to: 0,
        workers: 0,
    };
    while let Some(key) = raw.next() {
        let value = raw.next().ok_or_else(|| format!("{key} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{key} {value}: {e}");
        match key.as_str() {
            "--host" => a.host = value,
            "--port" => a.port = value.parse().map_err(|e| bad(&e))?,
            "--username" => a.username = value,
            "--password" => a.password = value,
            "--client-prefix" => a.client_prefix = value,
            "--label" => a.label = value,
            "--publishers" => a.publishers = value.parse().map_err(|e| bad(&e))?,
            "--subscribers" => a.subscribers = value.parse().map_err(|e| bad(&e))?,
            "--qos" => a.qos = value.parse().map_err(|e| bad(&e))?,
            "--secs" => a.secs = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => a.warmup = value.parse().map_err(|e| bad(&e))?,
            "--payload" => a.payload = value.parse().map_err(|e| bad(&e))?,
            "--rate" => a.rate = value.parse().map_err(|e| bad(&e))?,
            "--window" => a.window = value.parse().map_err(|e| bad(&e))?,
            "--stall-ms" => a.stall_ms = value.parse().map_err(|e| bad(&e))?,
            "--inflight" => a.inflight = value.parse().map_err(|e| bad(&e))?,
            "--topic" => a.topic = value,
            "--clients" => a.clients = value.parse().map_err(|e| bad(&e))?,
            "--batch" => a.batch = value.parse().map_err(|e| bad(&e))?,
            "--hold" => a.hold = value.parse().map_err(|e| bad(&e))?,
            "--keepalive" => a.keepalive = value.parse().map_err(|e| bad(&e))?,
            "--to" => a.to = value.parse().map_err(|e| bad(&e))?,
            "--workers" => a.workers = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {key}").into()),
        }
    }
    if a.client_prefix.is_empty() {
        a.client_prefix = if a.username.is_empty() {
            "bench".into()
        } else {
            a.username.clone()
        };
    }
    if a.qos > 1 {
        return Err("--qos: 0 or 1".into());
    }
    if a.payload < STAMP_BYTES {
        return Err(format!("--payload: at least {STAMP_BYTES} bytes (the stamp)").into());
    }
    if a.publishers == 0 || a.subscribers == 0 || a.window == 0 || a.batch == 0 || a.stall_ms == 0 {
        return Err(
            "--publishers, --subscribers, --window, --stall-ms and --batch must be > 0".into(),
        );
    }
    if !(a.secs > 0.0 && a.warmup >= 0.0 && a.rate >= 0.0 && a.hold >= 0.0) {
        return Err("--secs must be > 0; --warmup, --rate and --hold >= 0".into());
    }
    Ok(a)
}

fn qos_of(q: u8) -> QoS {
    if q == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    }
}

fn options(a: &Args, client_id: String, keepalive: u64, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, a.host.clone(), a.port);
    if !a.username.is_empty() {
        o.set_credentials(a.username.clone(), a.password.clone());
    }
    o.set_keep_alive(Duration::from_secs(keepalive));
    o.set_clean_session(true);
    o.set_inflight(inflight);
    o
}

fn network() -> NetworkOptions {
    let mut n = NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(10);
    n
}

/// Polls a fresh event loop until its CONNACK.
async fn connected(events: &mut EventLoop) -> std::result::Result<(), String> {
    events.set_network_options(network());
    let wait = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    match wait.await {
        Ok(r) => r,
        Err(_) => Err("no CONNACK within 15 s".into()),
    }
}

/// CPU seconds (user + system) used by this process so far.
fn own_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the whole line (12th and 13th after it).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

// ------------------------------------------------------------ throughput

/// send time (u64 ns), publisher (u32), sequence (u64)
const STAMP_BYTES: usize = 20;

struct Shared {
    /// Per publisher, per subscriber: messages received.
    delivered: Vec<Vec<AtomicU64>>,
    /// Per publisher: it waits for deliveries (its window is full) and
    /// wants to be woken through `progress`.
    waiting: Vec<AtomicBool>,
    progress: Vec<Notify>,
    /// Measured window, in stamp nanoseconds.
    from_ns: AtomicU64,
    to_ns: AtomicU64,
}

#[derive(Default)]
struct SubStats {
    /// Latencies (ns) of messages stamped inside the measured window.
    samples: Vec<u64>,
    unexpected: u64,
    error: Option<String>,
}

async fn subscriber(
    j: usize,
    mut events: EventLoop,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> SubStats {
    let mut stats = SubStats::default();
    loop {
        tokio::select! {
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = now_ns();
                    let b = &p.payload[..];
                    if b.len() < STAMP_BYTES {
                        stats.unexpected += 1;
                        continue;
                    }
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&b[0..8]);
                    let sent = u64::from_le_bytes(sent);
                    let mut publisher = [0u8; 4];
                    publisher.copy_from_slice(&b[8..12]);
                    let publisher = u32::from_le_bytes(publisher) as usize;
                    if sent >= shared.from_ns.load(Ordering::Relaxed)
                        && sent < shared.to_ns.load(Ordering::Relaxed)
                    {
                        stats.samples.push(at.saturating_sub(sent));
                    }
                    match shared.delivered.get(publisher).and_then(|d| d.get(j)) {
                        Some(count) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            if shared.waiting[publisher].load(Ordering::SeqCst) {
                                shared.progress[publisher].notify_waiters();
                            }
                        }
                        None => stats.unexpected += 1,
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if !*stop.borrow() {
                        stats.error = Some(e.to_string());
                    }
                    return stats;
                }
            },
            _ = stop.changed() => return stats,
        }
    }
}

/// Keeps a publisher's connection moving (writes, acks, pings).
async fn drive(mut events: EventLoop, mut stop: watch::Receiver<bool>) -> Option<String> {
    loop {
        tokio::select! {
            ev = events.poll() => if let Err(e) = ev {
                return if *stop.borrow() { None } else { Some(e.to_string()) };
            },
            _ = stop.changed() => return None,
        }
    }
}

struct PubStats {
    /// Messages stamped inside the measured window.
    in_window: u64,
    sent: u64,
    /// Times the window made no progress for a second (lost messages).
    stalls: u64,
    error: Option<String>,
}

async fn publisher(
    n: usize,
    client: AsyncClient,
    a: Args,
    shared: Arc<Shared>,
    start: Instant,
    end: Instant,
) -> PubStats {
    let topic = format!("{}/{}", a.topic, n);
    let qos = qos_of(a.qos);
    let interval = if a.rate > 0.0 {
        Some(Duration::from_secs_f64(a.publishers as f64 / a.rate))
    } else {
        None
    };
    let mut stats = PubStats {
        in_window: 0,
        sent: 0,
        stalls: 0,
        error: None,
    };
    // Messages written off as lost by stalls.
    let mut forgiven: u64 = 0;
    let slowest = || {
        shared.delivered[n]
            .iter()
            .map(|d| d.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0)
    };
    let mut payload = vec![0u8; a.payload];
    let (from, to) = (
        shared.from_ns.load(Ordering::Relaxed),
        shared.to_ns.load(Ordering::Relaxed),
    );
    let mut seq: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if let Some(interval) = interval {
            // Publisher n starts n/N of an interval late, so the publishers
            // do not all send at the same instant.
            let due = start + interval.mul_f64(seq as f64 + n as f64 / a.publishers as f64);
            if due >= end {
                break;
            }
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        // The window: messages sent and not yet received by the slowest
        // subscriber.
        let stall = Duration::from_millis(a.stall_ms);
        let step = stall.min(Duration::from_millis(100));
        let mut waited = Instant::now();
        loop {
            let room = |done: u64| stats.sent < done + forgiven + a.window;
            if room(slowest()) {
                break;
            }
            // Registered before the flag is raised and the count read again,
            // so a delivery in between still wakes it.
            let notified = shared.progress[n].notified();
            shared.waiting[n].store(true, Ordering::SeqCst);
            if room(slowest()) {
                shared.waiting[n].store(false, Ordering::SeqCst);
                break;
            }
            let timed_out = tokio::time::timeout(step, notified).await.is_err();
            shared.waiting[n].store(false, Ordering::SeqCst);
            if timed_out && waited.elapsed() >= stall {
                // No room for --stall-ms, and nothing arrived lately: write
                // the outstanding messages off and go on.
                stats.stalls += 1;
                forgiven = stats.sent.saturating_sub(slowest());
                waited = Instant::now();
            }
            if Instant::now() >= end {
                return stats;
            }
        }
        let stamp = now_ns();
        payload[0..8].copy_from_slice(&stamp.to_le_bytes());
        payload[8..12].copy_from_slice(&(n as u32).to_le_bytes());
        payload[12..20].copy_from_slice(&seq.to_le_bytes());
        if let Err(e) = client
            .publish(topic.as_str(), qos, false, payload.clone())
            .await
        {
            stats.error = Some(e.to_string());
            return stats;
        }
        seq += 1;
        stats.sent += 1;
        if stamp >= from && stamp < to {
            stats.in_window += 1;
        }
    }
    stats
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

async fn throughput(a: Args) -> Result<()> {
    let run = std::process::id();
    let qos = qos_of(a.qos);
    let shared = Arc::new(Shared {
        delivered: (0..a.publishers)
            .map(|_| (0..a.subscribers).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        waiting: (0..a.publishers).map(|_| AtomicBool::new(false)).collect(),
        progress: (0..a.publishers).map(|_| Notify::new()).collect(),
        from_ns: AtomicU64::new(u64::MAX),
        to_ns: AtomicU64::new(u64::MAX),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let inflight = if a.inflight == 0 {
        a.window
    } else {
        a.inflight
    };
    let inflight = u16::try_from(inflight.min(u64::from(u16::MAX))).unwrap_or(u16::MAX);

    // Subscribers first, each granted its subscription before any publish.
    let mut sub_clients = Vec::new();
    let mut sub_tasks: Vec<JoinHandle<SubStats>> = Vec::new();
    for j in 0..a.subscribers {
        let id = format!("{}-s{j}-{run}", a.client_prefix);
        let (client, mut events) = AsyncClient::new(options(&a, id.clone(), 30, inflight), 1024);
        connected(&mut events)
            .await
            .map_err(|e| format!("subscriber {id}: {e}"))?;
        client
            .subscribe(format!("{}/+", a.topic), qos)
            .await
            .map_err(|e| format!("subscriber {id}: {e}"))?;
        let granted = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => return Ok(ack.return_codes),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| format!("subscriber {id}: no SUBACK within 10 s"))?
        .map_err(|e| format!("subscriber {id}: {e}"))?;
        if !matches!(granted.first(), Some(SubscribeReasonCode::Success(_))) {
            return Err(format!("subscriber {id}: subscription refused: {granted:?}").into());
        }
        sub_tasks.push(tokio::spawn(subscriber(
            j,
            events,
            shared.clone(),
            stop_rx.clone(),
        )));
        sub_clients.push(client);
    }
    let mut pub_clients = Vec::new();
    let mut drivers = Vec::new();
    for i in 0..a.publishers {
        let id = format!("{}-p{i}-{run}", a.client_prefix);
        let (client, mut events) = AsyncClient::new(options(&a, id.clone(), 30, inflight), 1024);
        connected(&mut events)
            .await
            .map_err(|e| format!("publisher {id}: {e}"))?;
        drivers.push(tokio::spawn(drive(events, stop_rx.clone())));
        pub_clients.push(client);
    }

    let start = Instant::now() + Duration::from_millis(50);
    let from = start + Duration::from_secs_f64(a.warmup);
    let end = from + Duration::from_secs_f64(a.secs);
    let ns = |t: Instant| u64::try_from(t.duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX);
    shared.from_ns.store(ns(from), Ordering::Relaxed);
    shared.to_ns.store(ns(end), Ordering::Relaxed);
    tokio::time::sleep_until(start.into()).await;
    let cpu_start = own_cpu_secs();
    let pub_tasks: Vec<JoinHandle<PubStats>> = pub_clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(publisher(
                i,
                c.clone(),
                a.clone(),
                shared.clone(),
                start,
                end,
            ))
        })
        .collect();
    let mut pubs = Vec::new();
    for t in pub_tasks {
        pubs.push(
            t.await
                .map_err(|e| format!("a publisher task failed: {e}"))?,
        );
    }
    let cpu_secs = own_cpu_secs() - cpu_start;
    let wall = start.elapsed().as_secs_f64();
    let sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let expected_all = sent * a.subscribers as u64;
    // Wait for the outstanding deliveries.
    let drain_until = Instant::now() + Duration::from_secs(5);
    let delivered_all = || -> u64 {
        shared
            .delivered
            .iter()
            .flatten()
            .map(|d| d.load(Ordering::Relaxed))
            .sum()
    };
    while delivered_all() < expected_all && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    for c in pub_clients.iter().chain(sub_clients.iter()) {
        let _ = c.try_disconnect();
    }
    let mut samples = Vec::new();
    let mut unexpected = 0;
    let mut errors: Vec<String> = pubs.iter().filter_map(|p| p.error.clone()).collect();
    for t in sub_tasks {
        let s = t
            .await
            .map_err(|e| format!("a subscriber task failed: {e}"))?;
        samples.extend(s.samples);
        unexpected += s.unexpected;
        errors.extend(s.error);
    }
    for d in drivers {
        if let Ok(Some(e)) = d.await {
            errors.push(e);
        }
    }
    let in_window: u64 = pubs.iter().map(|p| p.in_window).sum();
    let stalls: u64 = pubs.iter().map(|p| p.stalls).sum();
    let expected = in_window * a.subscribers as u64;
    let received = samples.len() as u64;
    samples.sort_unstable();
    println!(
        "RESULT label={} mode=throughput qos={} pubs={} subs={} payload={} rate_target={} window={} \
inflight={} stall_ms={} secs={:.1} sent_in_window={} expected={} delivered={} lost={} pub_per_s={:.0} deliver_per_s={:.0} \
p50_us={:.0} p90_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0} stalls={} unexpected={} \
gen_cores={:.2} errors={}",
        a.label,
        a.qos,
        a.publishers,
        a.subscribers,
        a.payload,
        a.rate,
        a.window,
        inflight,
        a.stall_ms,
        a.secs,
        in_window,
        expected,
        received,
        expected.saturating_sub(received),
        in_window as f64 / a.secs,
        received as f64 / a.secs,
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        percentile(&samples, 1.0),
        stalls,
        unexpected,
        cpu_secs / wall,
        errors.len(),
    );
    for e in errors.iter().take(5) {
        eprintln!("mqtt_load: {e}");
    }
    if !errors.is_empty() {
        return Err(format!("{} connections failed during the run", errors.len()).into());
    }
    Ok(())
}

// ------------------------------------------------------------ idle

async fn idle(a: Args) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(a.clients);
    let mut tasks = Vec::with_capacity(a.clients);
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;
    let mut n = 0usize;
    while n < a.clients {
        let upto = (n + a.batch).min(a.clients);
        let mut batch = Vec::new();
        for k in n..upto {
            let id = format!("{}-{k}", a.client_prefix);
            let (client, mut events) = AsyncClient::new(options(&a, id, a.keepalive, 10), 8);
            let stop = stop_rx.clone();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let r = connected(&mut events).await;
                let ok = r.is_ok();
                let _ = ready_tx.send(r);
                if ok {
                    let _ = drive(events, stop).await;
                }
            });
            batch.push((client, task, ready_rx));
        }
        for (client, task, ready) in batch {
            match ready.await {
                Ok(Ok(())) => {
                    clients.push(client);
                    tasks.push(task);
                }
                Ok(Err(e)) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    failed += 1;
                    first_error.get_or_insert("the connecting task ended".into());
                }
            }
        }
        n = upto;
    }
    println!(
        "IDLE label={} clients={} connected={} failed={} connect_secs={:.2} first_error={:?}",
        a.label,
        a.clients,
        clients.len(),
        failed,
        t0.elapsed().as_secs_f64(),
        first_error.unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    // Still connected after the hold: every connection's task still runs.
    let alive = tasks.iter().filter(|t| !t.is_finished()).count();
    for c in &clients {
        let _ = c.try_disconnect();
    }
    // Give the DISCONNECTs a moment to be written before the sockets close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "IDLE_DONE label={} alive_after_hold={} total_secs={:.2}",
        a.label,
        alive,
        t0.elapsed().as_secs_f64()
    );
    if failed > 0 || alive < clients.len() {
        return Err(format!(
            "{failed} connections refused or failed, {} dropped during the hold",
            clients.len() - alive
        )
        .into());
    }
    Ok(())
}

// ------------------------------------------------------------ bare engine

async fn bare(a: Args) -> Result<()> {
    use rmqtt::context::ServerContext;
    use rmqtt::net::Builder;
    use rmqtt::server::MqttServer;
    let limits = redwall_broker::Limits::default();
    let scx = ServerContext::new()
        .mqtt_max_sessions(limits.max_connections as isize)
        .build()
        .await;
    let listener = limits
        .apply(
            Builder::new()
                .name("bare")
                .laddr(([127, 0, 0, 1], a.port).into()),
        )
        .allow_anonymous(true)
        .bind()?
        .tcp()?;
    println!("BARE listening on {}", listener.local_addr()?);
    MqttServer::new(scx)
        .listener(listener)
        .build()
        .run()
        .await?;
    Ok(())
}

async fn relay(a: Args) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await?;
    println!(
        "RELAY listening on {} to 127.0.0.1:{}",
        listener.local_addr()?,
        a.to
    );
    loop {
        let (mut client, _) = listener.accept().await?;
        let to = a.to;
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(mut engine) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                return;
            };
            let _ = engine.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
        });
    }
}

fn main() {
    epoch();
    let result = parse_args().and_then(|a| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if a.workers > 0 {
            builder.worker_threads(a.workers);
        }
        let runtime = builder.build()?;
        runtime.block_on(async move {
            match a.mode.as_str() {
                "idle" => idle(a).await,
                "bare" => bare(a).await,
                "relay" => relay(a).await,
                _ => throughput(a).await,
            }
        })
    });
    if let Err(e) = result {
        eprintln!("mqtt_load: {e}");
        std::process::exit(1);
    }
}
