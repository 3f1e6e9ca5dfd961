//! c10d process groups on CPU (Gloo), two ranks as two threads of this
//! process: collectives, the autograd all-gather, SyncBN against plain
//! BatchNorm over the union of the ranks' rows, and rendezvous failures.
use selfsup_native::dist::group::{Group, Rendezvous};
use selfsup_native::dist::{batchnorm, ReduceOp};
use selfsup_native::nn::init::Init;
use selfsup_native::nn::layers::{BatchNorm, BN_EPS, BN_MOMENTUM};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rendezvous(port: u16, rank: usize, world: usize, secs: f64) -> Rendezvous {
    Rendezvous { master: "127.0.0.1".into(), port, rank, world, timeout: Duration::from_secs_f64(secs), agent_store: None }
}

/// Runs `f(group)` on `world` threads, one rank each; returns their results in rank order.
fn on_ranks<R: Send + 'static>(world: usize, f: impl Fn(Group) -> R + Send + Sync + Clone + 'static) -> Vec<R> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let f = f.clone();
            std::thread::spawn(move || f(Group::join(&rendezvous(port, rank, world, 60.0), Device::Cpu).unwrap()))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_reduce_broadcast_and_host_values() {
    let out = on_ranks(2, |g| {
        let r = g.rank as f64;
        let sum = Tensor::from_slice(&[1.0 + r as f32, 10.0 * r as f32]);
        g.all_reduce(&[&sum], ReduceOp::Sum).unwrap();
        let max = Tensor::from_slice(&[r, -r]);
        g.all_reduce(&[&max], ReduceOp::Max).unwrap();
        // rank 1's values replace rank 0's, tensors of two dtypes at once
        let b = [Tensor::from_slice(&[r as f32; 3]), Tensor::from_slice(&[g.rank as i64 + 5])];
        g.broadcast(&b, 1, 1 << 20).unwrap();
        let mut host = [r + 0.5, 2.0];
        g.all_reduce_host(&mut host, ReduceOp::Min).unwrap();
        (Vec::<f32>::try_from(&sum).unwrap(), Vec::<f64>::try_from(&max).unwrap(), Vec::<f32>::try_from(&b[0]).unwrap(), b[1].int64_value(&[0]), host)
    });
    for (sum, max, b0, b1, host) in out {
        assert_eq!(sum, vec![3.0, 10.0]);
        assert_eq!(max, vec![1.0, 0.0]);
        assert_eq!(b0, vec![1.0; 3]);
        assert_eq!(b1, 6);
        assert_eq!(host, [0.5, 2.0]);
    }
}

#[test]
fn all_gather_concatenates_in_rank_order_and_sends_gradients_back() {
    let out = on_ranks(2, |g| {
        let r = g.rank as f64;
        let x = (Tensor::arange(6, (Kind::Float, Device::Cpu)).view([3, 2]) + 100.0 * r).set_requires_grad(true);
        let all = g.all_gather(&x).unwrap();
        // rank r's loss weights every gathered row by (r + 1)
        (&all * (r + 1.0)).sum(Kind::Float).backward();
        (Vec::<f32>::try_from(&all.detach().view([-1])).unwrap(), Vec::<f32>::try_from(&x.grad().view([-1])).unwrap())
    });
    let want: Vec<f32> = (0..6).map(|v| v as f32).chain((0..6).map(|v| v as f32 + 100.0)).collect();
    for (all, grad) in out {
        assert_eq!(all, want);
        // every rank's rows receive the sum of both ranks' weights: 1 + 2
        assert_eq!(grad, vec![3.0; 6]);
    }
}

/// A BatchNorm with non-trivial affine parameters and running statistics.
fn batchnorm(vs: &VarStore, c: i64) -> BatchNorm {
    let init = Init::new(0, Device::Cpu);
    let bn = BatchNorm::new(&vs.root(), &init, c).unwrap();
    tch::no_grad(|| {
        bn.weight.as_ref().unwrap().shallow_clone().copy_(&Tensor::linspace(0.5, 1.5, c, (Kind::Float, Device::Cpu)));
        bn.bias.as_ref().unwrap().shallow_clone().copy_(&Tensor::linspace(-0.2, 0.3, c, (Kind::Float, Device::Cpu)));
        bn.running_var.shallow_clone().copy_(&Tensor::linspace(1.0, 2.0, c, (Kind::Float, Device::Cpu)));
    });
    bn
}

fn inputs(dims: &[i64]) -> (Tensor, Tensor) {
    let mut g = Init::new(11, Device::Cpu);
    let x = g.uniform(dims, 3.0).unwrap() + 0.7;
    let upstream = g.uniform(dims, 1.0).unwrap();
    (x, upstream)
}

/// Forward output, input gradient, weight and bias gradients, running statistics.
type BnResult = (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor);

fn sync_bn_against_plain(dims: &'static [i64]) {
    // One process: plain BatchNorm over the whole batch.
    let (x, up) = inputs(dims);
    let vs = VarStore::new(Device::Cpu);
    let bn = batchnorm(&vs, dims[1]);
    let xi = x.copy().set_requires_grad(true);
    let y = Tensor::batch_norm(&xi, bn.weight.as_ref(), bn.bias.as_ref(), Some(&bn.running_mean), Some(&bn.running_var), true, BN_MOMENTUM, BN_EPS, true);
    (&y * &up).sum(Kind::Float).backward();
    let want: BnResult = (y.detach(), xi.grad(), bn.weight.as_ref().unwrap().grad(), bn.bias.as_ref().unwrap().grad(), bn.running_mean.copy(), bn.running_var.copy());

    // Two ranks, each with half of the rows: SyncBN.
    let got = on_ranks(2, move |g| {
        let (x, up) = inputs(dims);
        let half = dims[0] / 2;
        let (x, up) = (x.narrow(0, g.rank as i64 * half, half), up.narrow(0, g.rank as i64 * half, half));
        let vs = VarStore::new(Device::Cpu);
        let bn = batchnorm(&vs, dims[1]);
        let xi = x.copy().set_requires_grad(true);
        let y = batchnorm::synced(&bn, &xi, &g).unwrap();
        (&y * &up).sum(Kind::Float).backward();
        (y.detach(), xi.grad(), bn.weight.as_ref().unwrap().grad(), bn.bias.as_ref().unwrap().grad(), bn.running_mean.copy(), bn.running_var.copy())
    });
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        let err = (a - b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]).max(1e-3);
        assert!(err <= 2e-5 * scale, "{what}: max error {err} (scale {scale})");
    };
    let half = dims[0] / 2;
    let mut weight_grad = Tensor::zeros_like(&want.2);
    let mut bias_grad = Tensor::zeros_like(&want.3);
    for (r, (y, gx, gw, gb, rm, rv)) in got.iter().enumerate() {
        close(y, &want.0.narrow(0, r as i64 * half, half), "output");
        close(gx, &want.1.narrow(0, r as i64 * half, half), "input gradient");
        close(rm, &want.4, "running mean");
        close(rv, &want.5, "running variance");
        // affine gradients are local; DDP sums (averages) them across ranks
        weight_grad += gw;
        bias_grad += gb;
    }
    close(&weight_grad, &want.2, "weight gradient");
    close(&bias_grad, &want.3, "bias gradient");
}

#[test]
fn sync_batchnorm_2d_equals_batchnorm_over_all_rows() {
    sync_bn_against_plain(&[6, 3, 4, 5]);
}

#[test]
fn sync_batchnorm_1d_equals_batchnorm_over_all_rows() {
    sync_bn_against_plain(&[8, 5]);
}

#[test]
fn per_replica_statistics_in_one_process_match_each_replica() {
    let (x, _) = inputs(&[8, 3, 2, 2]);
    let vs = VarStore::new(Device::Cpu);
    let bn = batchnorm(&vs, 3);
    let y = batchnorm::per_replica(&bn, &x, 2).unwrap();
    for r in 0..2 {
        let idx = Tensor::arange_start_step(r, 8, 2, (Kind::Int64, Device::Cpu));
        let alone = batchnorm(&VarStore::new(Device::Cpu), 3);
        let want = Tensor::batch_norm(&x.index_select(0, &idx), alone.weight.as_ref(), alone.bias.as_ref(), Some(&alone.running_mean), Some(&alone.running_var), true, BN_MOMENTUM, BN_EPS, true);
        assert!(y.index_select(0, &idx).equal(&want), "rows of replica {r}");
        if r == 0 {
            assert!(bn.running_mean.equal(&alone.running_mean), "running statistics are replica 0's");
        }
    }
}

#[test]
fn a_master_that_never_appears_is_a_bounded_clear_error() {
    let t0 = Instant::now();
    let err = Group::join(&rendezvous(free_port(), 1, 2, 2.0), Device::Cpu).err().expect("no master").to_string();
    let took = t0.elapsed().as_secs_f64();
    assert!(took < 20.0, "gave up after {took} s");
    assert!(err.contains("cannot reach the rendezvous") && err.contains("--distributed-timeout"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn ranks_that_never_join_are_a_bounded_clear_error_on_rank_0() {
    let t0 = Instant::now();
    let err = Group::join(&rendezvous(free_port(), 0, 2, 2.0), Device::Cpu).err().expect("nobody joins").to_string();
    assert!(t0.elapsed().as_secs_f64() < 20.0);
    assert!(err.contains("not all 2 ranks joined"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let busy = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = Group::join(&rendezvous(port, 0, 2, 5.0), Device::Cpu).err().expect("port taken").to_string();
    assert!(err.contains("already in use") && err.contains("--distributed-port"), "{err}");
}

/// The local addresses of TCP sockets listening on `port` (from /proc/net/tcp and tcp6).
fn listening_on(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let table = std::fs::read_to_string(file).unwrap_or_default();
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN.
            if let (Some(local), Some("0A")) = (cols.get(1), cols.get(3).copied()) {
                if let Some((addr, p)) = local.split_once(':') {
                    if u16::from_str_radix(p, 16) == Ok(port) {
                        found.push(addr.to_string());
                    }
                }
            }
        }
    }
    found
}

/// Finding 19.9: the store served on every interface, without
/// authentication, although `selfsup launch` (master 127.0.0.1) needs
/// none but loopback.
#[test]
fn finding_19_9_the_store_of_one_machine_listens_on_loopback_alone() {
    let port = free_port();
    // Both ranks keep their group until both have joined: one that went
    // away early would close the other's connections while they form.
    let both = std::sync::Arc::new(std::sync::Barrier::new(2));
    let rank = |r: usize| {
        let both = both.clone();
        move || {
            let g = Group::join(&rendezvous(port, r, 2, 60.0), Device::Cpu);
            both.wait();
            g.map(|_| ())
        }
    };
    let serving = std::thread::spawn(rank(0));
    let start = Instant::now();
    let mut seen = listening_on(port);
    while seen.is_empty() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
        seen = listening_on(port);
    }
    // Rank 1 completes the group, so that rank 0 returns.
    let joined = std::thread::spawn(rank(1));
    serving.join().unwrap().unwrap();
    joined.join().unwrap().unwrap();
    // 0100007F is 127.0.0.1 as /proc writes it (little-endian hex).
    assert_eq!(seen, vec!["0100007F".to_string()], "the store listened on {seen:?}");
}
