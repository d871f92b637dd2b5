use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// An inner stream that records each write it is given.
#[derive(Clone, Default)]
struct Recorder {
    writes: Arc<Mutex<Vec<Vec<u8>>>>,
    shut: Arc<AtomicBool>,
}

impl Recorder {
    fn writes(&self) -> Vec<Vec<u8>> {
        self.writes.lock().unwrap().clone()
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writes.lock().unwrap().push(buf.to_vec());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, _: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let n = all.len();
        self.writes.lock().unwrap().push(all);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut.store(true, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }
}

/// Counts its wake-ups.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn small_writes_reach_the_stream_as_one_write_at_the_flush() {
    let rec = Recorder::default();
    let mut c = Coalesce::new(rec.clone());
    c.write_all(b"one ").await.unwrap();
    c.write_all(b"two ").await.unwrap();
    c.write_all(b"three").await.unwrap();
    assert!(rec.writes().is_empty(), "nothing is written before a flush");
    c.flush().await.unwrap();
    assert_eq!(rec.writes(), vec![b"one two three".to_vec()]);
    c.flush().await.unwrap();
    assert_eq!(rec.writes().len(), 1, "a flush with nothing buffered writes nothing");
}

#[tokio::test]
async fn the_flush_waits_until_the_worker_ran_its_other_ready_tasks() {
    let rec = Recorder::default();
    let mut c = Coalesce::new(rec.clone());
    c.write_all(b"first").await.unwrap();
    let waker = Waker::from(Arc::new(Wakes::default()));
    let mut cx = Context::from_waker(&waker);
    // the first poll of a flush only asks for the deferred wake-up
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending(), "still waiting: the wake-up has not fired");
    assert!(rec.writes().is_empty());
    // what other tasks write meanwhile joins the same write
    c.write_all(b" second").await.unwrap();
    // this task is deferred too: the runtime wakes both once it has nothing else to run
    tokio::task::yield_now().await;
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    assert_eq!(rec.writes(), vec![b"first second".to_vec()]);
    // the next burst waits again
    c.write_all(b"third").await.unwrap();
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
    tokio::task::yield_now().await;
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    assert_eq!(rec.writes().len(), 2);
}

#[test]
fn outside_a_runtime_the_flush_goes_on_the_next_poll() {
    let rec = Recorder::default();
    let mut c = Coalesce::new(rec.clone());
    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut c).poll_write(&mut cx, b"x").is_ready());
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "woken at once: no runtime to defer to");
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    assert_eq!(rec.writes(), vec![b"x".to_vec()]);
}

#[tokio::test]
async fn a_large_write_goes_straight_through_after_what_was_buffered() {
    let rec = Recorder::default();
    let mut c = Coalesce::new(rec.clone());
    c.write_all(b"head").await.unwrap();
    let big = vec![7u8; DIRECT_BYTES];
    let n = c.write(&big).await.unwrap();
    assert_eq!(n, big.len());
    assert_eq!(rec.writes(), vec![b"head".to_vec(), big], "in order, the large one uncopied");
    c.flush().await.unwrap();
    assert_eq!(rec.writes().len(), 2);
}

#[tokio::test]
async fn the_buffer_is_bounded() {
    let rec = Recorder::default();
    let mut c = Coalesce::new(rec.clone());
    let chunk = vec![1u8; DIRECT_BYTES - 1];
    let mut total = 0;
    while total <= MAX_BUFFERED {
        c.write_all(&chunk).await.unwrap();
        total += chunk.len();
        assert!(c.buf.len() <= MAX_BUFFERED);
    }
    assert!(!rec.writes().is_empty(), "past the bound the buffer was written out");
    c.flush().await.unwrap();
    let sent: usize = rec.writes().iter().map(Vec::len).sum();
    assert_eq!(sent, total);
}

#[tokio::test]
async fn shutdown_writes_what_is_buffered_first() {
    let rec = Recorder::default();
    let mut c = Coalesce::new(rec.clone());
    c.write_all(b"bye").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(rec.writes(), vec![b"bye".to_vec()]);
    assert!(rec.shut.load(Ordering::SeqCst));
}

#[tokio::test]
async fn bytes_arrive_in_order_over_a_real_pipe_with_a_small_window() {
    // the pipe takes 64 bytes at a time: drains are held up and resumed
    let (mut client, server) = tokio::io::duplex(64);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut c = Coalesce::new(server);
    let mut want = Vec::new();
    for i in 0..200u32 {
        let piece = format!("piece {i};");
        c.write_all(piece.as_bytes()).await.unwrap();
        want.extend_from_slice(piece.as_bytes());
        if i % 7 == 0 {
            c.flush().await.unwrap();
        }
    }
    c.shutdown().await.unwrap();
    drop(c);
    assert_eq!(reader.await.unwrap(), want);
}

#[tokio::test]
async fn flushes_that_gather_nothing_stop_waiting_until_one_would() {
    let rec = Recorder::default();
    let mut c = Coalesce::new(rec.clone());
    let waker = Waker::from(Arc::new(Wakes::default()));
    let mut cx = Context::from_waker(&waker);
    // a flush that must wait; `alone` says whether anything joins it
    async fn burst(c: &mut Coalesce<Recorder>, cx: &mut Context<'_>, alone: bool) -> bool {
        c.write_all(b"r").await.unwrap();
        let waited = Pin::new(&mut *c).poll_flush(cx).is_pending();
        if waited {
            if !alone {
                c.write_all(b"j").await.unwrap();
            }
            tokio::task::yield_now().await;
            assert!(Pin::new(&mut *c).poll_flush(cx).is_ready());
        }
        waited
    }
    // one client: waits, then 1 at once, waits, 3 at once, waits, 7 at once, ...
    let mut waited = Vec::new();
    for _ in 0..16 {
        waited.push(burst(&mut c, &mut cx, true).await);
    }
    let w: Vec<u8> = waited.iter().map(|&b| u8::from(b)).collect();
    assert_eq!(w, [1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    // skipped flushes still send everything
    assert_eq!(rec.writes().len(), 16);
    // a wait that gathers a write makes the next flush wait again
    while !burst(&mut c, &mut cx, false).await {}
    assert!(burst(&mut c, &mut cx, true).await, "waits after a gain");
    assert!(!burst(&mut c, &mut cx, true).await, "then backs off again");
}

#[tokio::test]
async fn a_flush_after_a_large_write_or_with_much_buffered_goes_at_once() {
    let rec = Recorder::default();
    let mut c = Coalesce::new(rec.clone());
    let waker = Waker::from(Arc::new(Wakes::default()));
    let mut cx = Context::from_waker(&waker);
    // a big response: its DATA went straight through, its trailers are buffered
    c.write_all(&vec![5u8; DIRECT_BYTES]).await.unwrap();
    c.write_all(b"trailers").await.unwrap();
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready(), "no wait behind other work");
    assert_eq!(rec.writes().len(), 2);
    // many small writes adding up
    for _ in 0..FLUSH_NOW_BYTES / 1024 {
        c.write_all(&[6u8; 1024]).await.unwrap();
    }
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    assert_eq!(rec.writes().len(), 3);
    // a small one waits again
    c.write_all(b"small").await.unwrap();
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
}
