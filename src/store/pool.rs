//! A small blocking connection pool: idle connections are reused, new ones are made up to a
//! maximum, and callers wait (bounded) beyond that. Connections found broken are dropped.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::StoreError;

type Factory<T> = Box<dyn Fn() -> Result<T, StoreError> + Send + Sync>;

pub(crate) struct Pool<T> {
    state: Mutex<PoolState<T>>,
    available: Condvar,
    max: usize,
    make: Factory<T>,
    wait: Duration,
}

struct PoolState<T> {
    idle: Vec<T>,
    open: usize,
}

impl<T> Pool<T> {
    pub fn new(max: usize, wait: Duration, make: Factory<T>) -> Self {
        Self {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            available: Condvar::new(),
            max: max.max(1),
            make,
            wait,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState<T>> {
        // A panic while holding this lock leaves consistent counters; carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put a connection the caller already made into the pool (the first one, which proved
    /// the location works).
    pub fn seed(&self, conn: T) {
        let mut s = self.lock();
        s.open += 1;
        s.idle.push(conn);
    }

    /// Drop every idle connection (after one was found dead: its siblings most likely are).
    pub fn discard_idle(&self) {
        let mut s = self.lock();
        let idle = std::mem::take(&mut s.idle);
        s.open -= idle.len();
        drop(s);
        drop(idle);
        self.available.notify_all();
    }

    pub fn get(&self) -> Result<Pooled<'_, T>, StoreError> {
        let mut s = self.lock();
        loop {
            if let Some(conn) = s.idle.pop() {
                return Ok(Pooled {
                    pool: self,
                    conn: Some(conn),
                    broken: false,
                });
            }
            if s.open < self.max {
                s.open += 1;
                drop(s);
                return match (self.make)() {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                        broken: false,
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.available.notify_one();
                        Err(e)
                    }
                };
            }
            let (guard, timeout) = self
                .available
                .wait_timeout(s, self.wait)
                .unwrap_or_else(|e| e.into_inner());
            s = guard;
            if timeout.timed_out() && s.idle.is_empty() && s.open >= self.max {
                return Err(StoreError::PoolExhausted {
                    max: self.max,
                    waited_ms: self.wait.as_millis() as u64,
                });
            }
        }
    }
}

/// A connection on loan; returned to the pool when dropped unless marked broken.
pub(crate) struct Pooled<'p, T> {
    pool: &'p Pool<T>,
    conn: Option<T>,
    broken: bool,
}

impl<T> Pooled<'_, T> {
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }
}

impl<T> std::ops::Deref for Pooled<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.conn
            .as_ref()
            .expect("pooled connection present until drop")
    }
}

impl<T> std::ops::DerefMut for Pooled<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.conn
            .as_mut()
            .expect("pooled connection present until drop")
    }
}

impl<T> Drop for Pooled<'_, T> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut s = self.pool.lock();
        if self.broken {
            s.open -= 1;
            drop(conn);
        } else {
            s.idle.push(conn);
        }
        drop(s);
        self.pool.available.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn reuses_connections_and_waits_at_the_limit() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let pool = Pool::new(
            2,
            Duration::from_millis(50),
            Box::new(move || Ok(m.fetch_add(1, Ordering::SeqCst))),
        );
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        assert_eq!((*a, *b), (0, 1));
        assert!(matches!(pool.get(), Err(StoreError::PoolExhausted { .. })));
        drop(a);
        assert_eq!(*pool.get().unwrap(), 0);
        let mut c = pool.get().unwrap();
        c.mark_broken();
        drop(c);
        drop(b);
        // The broken one was dropped; the next new connection is the third ever made.
        let x = pool.get().unwrap();
        let y = pool.get().unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 3);
        assert!(*x == 1 || *y == 1);
    }
}
