use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A real `redis-server` on a free loopback port, in its own temp dir.
/// Killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    aof: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// With AOF (`appendfsync always`): a restart keeps every write.
    pub fn start_with_aof() -> Self {
        Self::launch(true)
    }

    fn launch(aof: bool) -> Self {
        let mut server = Self { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, aof };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let dir: PathBuf = self.dir.path().into();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--dir", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        self.child = Some(cmd.spawn().expect("redis-server must be installed (scripts/test.sh installs it)"));
        // Ready means serving commands: Redis accepts connections while it
        // loads the AOF and answers most commands with LOADING until done.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.loaded() {
            assert!(Instant::now() < deadline, "redis-server did not come up on port {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Answers, and has finished loading its data.
    fn loaded(&self) -> bool {
        let Ok(mut conn) = self.client().get_connection() else { return false };
        redis::cmd("INFO")
            .arg("persistence")
            .query::<String>(&mut conn)
            .is_ok_and(|info| info.lines().any(|line| line.trim() == "loading:0"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and directory (so AOF data comes back).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
