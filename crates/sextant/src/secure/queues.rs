//! Callers waiting for a TokenReview, queued per cluster. Each cluster's API server reviews
//! its own tokens, and a remote one may answer slowly or never (it accepts connections and
//! hangs): its queue must then hold only its own callers. So each cluster has its own
//! [`MAX_REVIEWS`] reviews in flight, and callers waiting are bounded per cluster by a fair
//! share of `max_waiting`: all of it while one cluster is busy, half each while two are, and
//! so on. A cluster under its share is admitted whatever the others hold; the total stays
//! under twice `max_waiting` (the backlog a cluster gathered alone drains within the review
//! timeout while the others take their share).
//!
//! A queue is of one registration of its cluster: re-registered (another kubeconfig, another
//! API server), the cluster gets a new queue with a new number, which keys the review cache
//! so that nothing the old API server vouched for outlives it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sextant_kube::clusters::Cluster;
use tokio::sync::Semaphore;

/// TokenReviews in flight at once per cluster: callers need not be authenticated to make one,
/// so they must not be able to flood an API server.
pub const MAX_REVIEWS: usize = 16;

/// Every cluster's queue.
pub struct Queues {
    max_waiting: usize,
    /// Callers waiting over every queue, those of replaced queues included.
    total: Arc<AtomicUsize>,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    registrations: AtomicU64,
}

/// One registration of a cluster: its reviews in flight and callers waiting.
pub struct Queue {
    /// The registration it is of; `None`: the config cluster's, which is never re-registered.
    /// Held weakly, so the address is not reused while the queue lives.
    cluster: Option<Weak<Cluster>>,
    /// Numbers the registration for the review cache.
    pub registration: u64,
    /// Permits for reviews in flight.
    pub reviews: Semaphore,
    waiting: AtomicUsize,
    /// Until when the API server is taken as not answering: it gave no answer to a review.
    quiet_until: Mutex<Option<Instant>>,
}

/// Why a caller was not queued.
pub struct Full {
    /// The cluster's share of `max_waiting` now, or the total bound when that was hit.
    pub bound: usize,
    /// Whether the total over every cluster was hit (rather than the cluster's share).
    pub total: bool,
}

impl Queues {
    /// Queues holding at most about `max_waiting` callers together.
    pub fn new(max_waiting: usize) -> Self {
        Queues {
            max_waiting,
            total: Arc::new(AtomicUsize::new(0)),
            queues: Mutex::new(HashMap::new()),
            registrations: AtomicU64::new(0),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Queue>>> {
        // Counters and handles only: consistent whatever a panicking holder did.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue of cluster `id` as registered now (`cluster`; `None` for the config
    /// cluster), made when it has none yet.
    pub fn of(&self, id: &str, cluster: Option<&Arc<Cluster>>) -> Arc<Queue> {
        let mut map = self.map();
        if let Some(queue) = map.get(id)
            && queue.is_of(cluster)
        {
            return queue.clone();
        }
        // A registration is new: forget the queues of clusters gone that nobody waits in.
        map.retain(|_, q| {
            q.waiting.load(Ordering::SeqCst) > 0
                || q.cluster.as_ref().is_none_or(|c| c.strong_count() > 0)
        });
        let queue = Arc::new(Queue {
            cluster: cluster.map(Arc::downgrade),
            registration: self.registrations.fetch_add(1, Ordering::SeqCst),
            reviews: Semaphore::new(MAX_REVIEWS),
            waiting: AtomicUsize::new(0),
            quiet_until: Mutex::new(None),
        });
        map.insert(id.to_owned(), queue.clone());
        queue
    }

    /// Counts one more caller waiting in `queue`, or says which bound refuses it.
    pub fn wait(&self, queue: &Arc<Queue>) -> Result<Waiting, Full> {
        let busy = 1 + self
            .map()
            .values()
            .filter(|q| !Arc::ptr_eq(q, queue) && q.waiting.load(Ordering::SeqCst) > 0)
            .count();
        let share = (self.max_waiting / busy).max(1);
        let total_bound = 2 * self.max_waiting.max(1);
        let waiting = Waiting {
            queue: queue.clone(),
            total: self.total.clone(),
        };
        queue.waiting.fetch_add(1, Ordering::SeqCst);
        let total = self.total.fetch_add(1, Ordering::SeqCst);
        // Counted first, then checked: two callers racing cannot both take the last place.
        if waiting.queue.waiting.load(Ordering::SeqCst) > share {
            return Err(Full {
                bound: share,
                total: false,
            });
        }
        if total >= total_bound {
            return Err(Full {
                bound: total_bound,
                total: true,
            });
        }
        Ok(waiting)
    }
}

impl Queue {
    fn is_of(&self, cluster: Option<&Arc<Cluster>>) -> bool {
        match (&self.cluster, cluster) {
            (None, None) => true,
            (Some(weak), Some(cluster)) => std::ptr::eq(weak.as_ptr(), Arc::as_ptr(cluster)),
            _ => false,
        }
    }

    /// Callers waiting now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn quiet(&self) -> MutexGuard<'_, Option<Instant>> {
        self.quiet_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The API server gave no answer: for `hold_off`, new reviews are not asked of it.
    pub fn unanswered(&self, now: Instant, hold_off: Duration) {
        *self.quiet() = Some(now + hold_off);
    }

    /// The API server answered.
    pub fn answered(&self) {
        *self.quiet() = None;
    }

    /// Whether the API server is taken as not answering at `now`.
    pub fn is_quiet(&self, now: Instant) -> bool {
        self.quiet().is_some_and(|until| until > now)
    }
}

/// One caller counted among those waiting in a queue (and in total), until dropped.
pub struct Waiting {
    queue: Arc<Queue>,
    total: Arc<AtomicUsize>,
}

impl Waiting {
    /// The queue it waits in.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::SeqCst);
        self.total.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_leaves_another_clusters_share_free() {
        let queues = Queues::new(4);
        let b = queues.of("B", Some(&Cluster::fixed("B", "test")));
        let held: Vec<Waiting> = (0..4).map(|_| queues.wait(&b).ok().expect("B")).collect();
        let refused = queues.wait(&b).err().expect("B is full");
        assert_eq!((refused.bound, refused.total), (4, false));
        let local = queues.of("Kubernetes", None);
        // B alone held all of it; now two are busy, and the config cluster has its half.
        let mine: Vec<Waiting> = (0..2)
            .map(|_| queues.wait(&local).ok().expect("config cluster"))
            .collect();
        assert_eq!(queues.wait(&local).err().expect("over its half").bound, 2);
        assert_eq!(queues.wait(&b).err().expect("over its half").bound, 2);
        drop((held, mine));
        assert_eq!((b.waiting(), local.waiting()), (0, 0));
        assert_eq!(queues.total.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_total_stays_under_twice_the_bound() {
        let queues = Queues::new(4);
        let clusters: Vec<Arc<Cluster>> = (0..8)
            .map(|i| Cluster::fixed(&format!("c{i}"), "test"))
            .collect();
        let mut held = Vec::new();
        for c in &clusters {
            let queue = queues.of(c.id(), Some(c));
            while let Ok(w) = queues.wait(&queue) {
                held.push(w);
            }
        }
        assert!(held.len() <= 8, "{}", held.len());
        assert_eq!(queues.total.load(Ordering::SeqCst), held.len());
    }

    #[test]
    fn a_cluster_registered_again_gets_a_new_queue() {
        let queues = Queues::new(4);
        let first = Cluster::fixed("B", "one");
        let a = queues.of("B", Some(&first));
        assert!(Arc::ptr_eq(&a, &queues.of("B", Some(&first))));
        let second = Cluster::fixed("B", "two");
        let b = queues.of("B", Some(&second));
        assert_ne!(a.registration, b.registration);
        drop((first, second));
        // The queues of clusters gone are forgotten at the next new registration.
        let c = Cluster::fixed("C", "test");
        queues.of("C", Some(&c));
        assert_eq!(queues.map().keys().collect::<Vec<_>>(), ["C"]);
        assert_eq!(
            queues.of("Kubernetes", None).registration,
            queues.of("Kubernetes", None).registration
        );
    }
}
