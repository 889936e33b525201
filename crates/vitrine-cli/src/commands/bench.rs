//! `vitrine bench`: training and inference throughput of one model, each backend measured in a
//! process of its own so that its peak memory is its own.

use anyhow::{Context, Result, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use vitrine_core::backend::{BackendChoice, gpu_adapters, select_device, select_devices};
use vitrine_core::bench::Timing;
use vitrine_core::family::BenchRequest;

use crate::cli::BenchArgs;
use crate::registry::FAMILIES;

pub fn bench(args: &BenchArgs, matches: &ArgMatches) -> Result<()> {
    let Some(family) = FAMILIES.iter().find(|f| f.models().contains(&args.model.as_str())) else {
        let models: Vec<&str> = FAMILIES.iter().flat_map(|f| f.models()).collect();
        bail!("unknown model `{}`: expected one of {}", args.model, models.join(", "));
    };
    // Every family's flags reach `vitrine bench`; another family's would be ignored.
    let own = family.bench_args();
    for other in FAMILIES.iter().filter(|f| f.task() != family.task()) {
        for arg in other.bench_args().iter().filter(|arg| !own.iter().any(|a| a.get_id() == arg.get_id())) {
            if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
                let flag = arg.get_long().unwrap_or(arg.get_id().as_str());
                bail!("--{flag} applies to {} ({}), not to {}", other.task(), other.models().join(", "), args.model);
            }
        }
    }
    if args.single || !args.devices.is_empty() {
        let compute = if args.devices.is_empty() {
            select_device(args.backend.unwrap_or(BackendChoice::Auto))?
        } else {
            select_devices(&args.devices).context("--devices")?
        };
        let timing = Timing { warmup: args.warmup, steps: args.steps, budget: std::time::Duration::from_secs_f64(args.seconds) };
        let request = BenchRequest { compute: &compute, batch_size: args.batch_size, timing, args: matches };
        let mut result = family.bench(&args.model, &request)?;
        if !compute.replicas.is_empty() && !result.extra.contains_key("devices") {
            bail!("--devices: {} trains on one device (data-parallel training covers the image and review classifiers)", args.model);
        }
        result.extra.insert("peak_memory_mib".into(), peak_memory_mib().into());
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    let backends = match args.backend {
        Some(b) => vec![b],
        None => {
            let mut all = vec![BackendChoice::Flex, BackendChoice::Ndarray];
            if gpu_adapters().iter().any(|a| a.is_hardware()) {
                all.push(BackendChoice::Wgpu);
            } else if !args.json {
                println!("wgpu: skipped (no hardware adapter; --backend wgpu forces a software one)");
            }
            all
        }
    };
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    for backend in backends {
        let output = std::process::Command::new(&exe)
            .args(forwarded_args())
            .args(["--single", "--backend", &backend.to_string()])
            .output()
            .context("starting the benchmark process")?;
        if !output.status.success() {
            bail!("bench on {backend} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let json: serde_json::Value =
            serde_json::from_str(line.trim().lines().last().unwrap_or_default()).with_context(|| format!("reading the {backend} result: {line}"))?;
        if !args.json {
            if let Some(loader) = json["loader_images_per_sec"].as_f64() {
                println!("{:<8} loader alone {loader:>7.1} images/s ({} photos of {})", backend, json["images"], json["data"].as_str().unwrap_or(""));
            }
            // null: training untimed (`--rank-only`).
            let train = json["train_samples_per_sec"].as_f64().map_or("untimed".into(), |rate| format!("{rate:.1}"));
            println!(
                "{:<8} train {:>7} samples/s  inference {:>8.1} samples/s  peak memory {:>6} MiB  ({})",
                backend,
                train,
                json["inference_samples_per_sec"].as_f64().unwrap_or(0.0),
                json["peak_memory_mib"].as_u64().map_or("?".into(), |m| m.to_string()),
                json["device"].as_str().unwrap_or("")
            );
        }
        results.push(json);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

/// This process's arguments without `--backend` and `--json`, for a child that measures one backend.
fn forwarded_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backend" => {
                args.next();
            }
            "--json" => {}
            _ if arg.starts_with("--backend=") => {}
            _ => out.push(arg),
        }
    }
    out
}

/// The process's peak resident memory (Linux), in MiB.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
