#[test]
fn probe_threads() {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let t = s.lines().find(|l| l.starts_with("Threads:")).unwrap();
    println!("PROBE {t} name={:?}", std::thread::current().name());
}
