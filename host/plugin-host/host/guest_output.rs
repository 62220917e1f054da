//! A plugin's stdout and stderr: lines go to `tracing`, tagged with the
//! plugin's name, and the last few are kept for the message of a crash.

use super::*;

/// Guest stdout or stderr: complete lines go to `tracing`, tagged with the
/// plugin's name. Never blocks and never fails, so a chatty guest cannot
/// wedge or crash itself on output.
#[derive(Clone)]
pub(super) struct GuestOutput {
    plugin: Arc<str>,
    stream: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
    /// The last few lines written, so a crash can quote the guest's own
    /// explanation (a Rust panic message goes to stderr just before the trap).
    recent: Arc<Mutex<std::collections::VecDeque<String>>>,
}

/// Lines of guest output kept for crash reports.
pub(super) const RECENT_LINES: usize = 4;

/// Longest line kept before it is emitted anyway.
pub(super) const MAX_LINE: usize = 4096;

impl GuestOutput {
    pub(super) fn new(plugin: Arc<str>, stream: &'static str) -> Self {
        GuestOutput {
            plugin,
            stream,
            pending: Arc::default(),
            recent: Arc::default(),
        }
    }

    /// What the guest said last that explains a crash: the message of a
    /// Rust panic (the line after "panicked at …"), else its last line.
    pub(super) fn last_words(&self) -> Option<String> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let panic_at = recent.iter().rposition(|l| l.contains("panicked at"));
        let line = match panic_at {
            Some(i) => recent.get(i + 1).or(recent.get(i)),
            None => recent.back(),
        }?;
        let mut line = line.trim().to_string();
        if line.len() > 300 {
            let cut = (0..=300).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
            line.truncate(cut);
            line.push('…');
        }
        Some(line)
    }

    fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if pending.len() > MAX_LINE {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(text.chars().take(1024).collect());
        }
        let plugin = &*self.plugin;
        if self.stream == "stderr" {
            tracing::warn!(target: "wimguard::plugin", plugin, stream = self.stream, "{text}");
        } else {
            tracing::info!(target: "wimguard::plugin", plugin, stream = self.stream, "{text}");
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
