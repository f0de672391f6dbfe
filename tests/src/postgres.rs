//! A private PostgreSQL server for one test: a cluster made with `initdb` in
//! a temporary directory, started with `pg_ctl` on a free port of
//! 127.0.0.1, stopped (immediately: its data is thrown away) when dropped.
//! It runs as the current user (as `postgres` when that is root, which
//! PostgreSQL refuses to run as) with trust authentication, and does not
//! fsync: what it holds lives as long as the test.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

/// The directory of PostgreSQL's programs: `SQUALL_PG_BIN`, else what
/// `pg_config --bindir` says, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian's layout, where `initdb` is not on `PATH`).
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SQUALL_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|dir| dir.join("initdb").is_file());
    if from_config.is_some() {
        return from_config;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl Postgres {
    /// A cluster that also takes TLS connections, with a server certificate
    /// for 127.0.0.1 signed by a CA of its own (made with `openssl`); the
    /// CA's certificate (PEM) is [`Postgres::ca`].
    pub fn start_tls() -> Self {
        let pg = Self::start();
        let dir = pg.dir.path();
        let openssl = |args: &[&str]| {
            run(
                Command::new("openssl").args(args).current_dir(dir),
                "openssl",
            )
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=squall test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n",
        )
        .expect("write san.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod key");
        if let Some((uid, gid)) = server_user() {
            for file in ["server.key", "server.pem"] {
                std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid)).expect("chown");
            }
        }
        let conf = format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            dir.join("server.pem").display(),
            key.display()
        );
        let auto = pg.data().join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&conf);
        std::fs::write(&auto, text).expect("write postgresql.auto.conf");
        run(
            program(&pg.bin, "pg_ctl")
                .arg("-D")
                .arg(pg.data())
                .args(["-w", "reload"]),
            "pg_ctl reload",
        );
        pg
    }

    /// The CA that signed a [`Postgres::start_tls`] server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Make and start a cluster. Panics, saying what is missing, when
    /// PostgreSQL's programs are not installed (`.ci/run` installs them).
    pub fn start() -> Self {
        let bin = bin_dir().expect(
            "PostgreSQL's programs (initdb, pg_ctl) are not installed: apt-get install postgresql-15, or set SQUALL_PG_BIN",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some((uid, gid)) = server_user() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        run(
            program(&bin, "initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "squall", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .arg("--locale=C"),
            "initdb",
        );
        // A free port: the kernel's pick, released and taken again at once
        // (another process taking it meanwhile is retried).
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                dir.path().display()
            );
            let out = program(&bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "120", "-o", &options, "-l"])
                .arg(dir.path().join("log"))
                .arg("start")
                .output()
                .expect("pg_ctl runs");
            if out.status.success() {
                return Self { bin, dir, port };
            }
            last = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// One server for the whole test process, started on first use; each
    /// test takes a database of its own ([`Postgres::fresh_database`]).
    /// A static is never dropped, so a watchdog process stops the server
    /// and removes its files once this process has exited, however it
    /// ended.
    pub fn shared() -> &'static Postgres {
        static SHARED: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let pg = Self::start();
            pg.stop_when_gone(std::process::id());
            pg
        })
    }

    /// Stop this server and remove its directory once process `pid` is
    /// gone, from a process of its own. Never waited for: it outlives this
    /// process, whose exit hands it to init.
    #[allow(clippy::zombie_processes)]
    fn stop_when_gone(&self, pid: u32) {
        let stop = program(&self.bin, "pg_ctl");
        let mut line: Vec<String> = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        line.extend(["-D".into(), self.data().display().to_string()]);
        line.extend(["-m", "immediate", "-w", "stop"].map(String::from));
        let quoted: Vec<String> = line
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {} >/dev/null 2>&1; rm -rf '{}'",
            quoted.join(" "),
            self.dir.path().display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the watchdog starts");
    }

    /// A new, empty database with a name of its own; its URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.create_database(&format!("t{}_{n}", std::process::id()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` (`postgres` is always there).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://squall@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self, name: &str) -> String {
        run(
            Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-U", "squall", "-p"])
                .arg(self.port.to_string())
                .arg(name),
            "createdb",
        );
        self.url(name)
    }

    /// Run `sql` with `psql` on the database at `url` (one of this
    /// cluster's), as the serving node `node` when given (its connections'
    /// `squall.node`): what it printed, or its error.
    pub fn sql(&self, url: &str, node: Option<&str>, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            url,
        ]);
        if let Some(node) = node {
            cmd.env("PGOPTIONS", format!("-c squall.node={node}"));
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("psql does not run: {e}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The server's own log, for a failing test to show.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = program(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The user the server runs as when this process is root: `postgres`'s
/// uid and gid (Debian's package makes that user).
fn server_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((
        id(&["-u", "postgres"])
            .expect("running as root, and there is no `postgres` user to run PostgreSQL as"),
        id(&["-g", "postgres"]).expect("the `postgres` user has a group"),
    ))
}

/// One of PostgreSQL's programs, run as [`server_user`] when this process
/// is root.
fn program(bin: &std::path::Path, name: &str) -> Command {
    if server_user().is_some() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin.join(name));
        cmd
    } else {
        Command::new(bin.join(name))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
