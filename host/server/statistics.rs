//! StatisticsService: totals over the catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{convert, Shared};
use crate::api::v1 as pb;

pub struct StatisticsApi {
    shared: Arc<Shared>,
}

impl StatisticsApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        StatisticsApi { shared }
    }
}

#[tonic::async_trait]
impl pb::statistics_service_server::StatisticsService for StatisticsApi {
    async fn get_statistics(
        &self,
        _req: Request<pb::GetStatisticsRequest>,
    ) -> Result<Response<pb::Statistics>, Status> {
        let cat = self.shared.jobs.catalog();
        let internal = |e: crate::catalog::CatalogError| Status::internal(e.to_string());
        let mut st = pb::Statistics::default();
        for (status, count) in cat.count_by_status().map_err(internal)? {
            st.backups_by_status.push(pb::StatusCount {
                status: convert::job_status(status) as i32,
                count,
            });
        }
        let ok = cat.all_succeeded().map_err(internal)?;
        let mut run_ms = 0i64;
        let mut sources: BTreeMap<String, pb::SourceStatistics> = BTreeMap::new();
        for b in &ok {
            st.bytes_total += b.bytes_total;
            st.bytes_read += b.bytes_read;
            st.bytes_stored += b.bytes_stored;
            if let (Some(s), Some(f)) = (b.started_at, b.finished_at) {
                run_ms += (f - s).max(0);
            }
            let e = sources.entry(b.source.clone()).or_insert_with(|| pb::SourceStatistics {
                source: b.source.clone(),
                ..Default::default()
            });
            e.backups += 1;
            // Rows come oldest first, so the last one seen is the latest.
            e.last_success_at = b.finished_at.map(convert::timestamp_ms);
            e.last_success_uuid = b.uuid.clone();
        }
        st.dedupe_ratio = if st.bytes_read > 0 {
            st.bytes_total as f64 / st.bytes_read as f64
        } else {
            0.0
        };
        st.compression_ratio = if st.bytes_stored > 0 {
            st.bytes_read as f64 / st.bytes_stored as f64
        } else {
            0.0
        };
        st.throughput_bytes_per_second = if run_ms > 0 {
            st.bytes_read as f64 * 1000.0 / run_ms as f64
        } else {
            0.0
        };
        for p in cat.archive_paths().map_err(internal)? {
            if let Ok(m) = std::fs::metadata(&p) {
                st.archives += 1;
                st.archive_bytes += m.len();
                // What `archive optimize` would free (soft deletes, old tables).
                let reclaimable = crate::wim::WimArchive::open(std::path::Path::new(&p), &**self.shared.jobs.plugins())
                    .map(|a| crate::wim::writer::reclaimable_bytes(&a))
                    .unwrap_or(0);
                st.archive_details.push(pb::ArchiveStatistics {
                    snapshots: ok.iter().filter(|b| b.destination == p).count() as u64,
                    archive: p,
                    bytes: m.len(),
                    reclaimable_bytes: reclaimable,
                });
            }
        }
        // Remote archives: what their objects take in the store.
        for a in cat.remote_archives().map_err(internal)? {
            let objects = cat.remote_objects(&a).map_err(internal)?;
            let stored: Vec<_> = objects
                .iter()
                .filter(|o| o.state != crate::catalog::remote::ObjectState::Uploading)
                .collect();
            if !stored.is_empty() {
                let bytes = stored.iter().map(|o| o.size).sum::<u64>();
                st.archives += 1;
                st.archive_bytes += bytes;
                // Removed snapshots wait for a consolidation: their metadata
                // at least, and the blobs only they used (not counted here).
                let images = cat.remote_images(&a).map_err(internal)?;
                let reclaimable = images
                    .iter()
                    .filter(|i| i.removed)
                    .map(|i| i.metadata.reshdr.size_in_wim)
                    .sum();
                st.archive_details.push(pb::ArchiveStatistics {
                    snapshots: images.iter().filter(|i| !i.removed).count() as u64,
                    archive: a,
                    bytes,
                    reclaimable_bytes: reclaimable,
                });
            }
        }
        st.sources = sources.into_values().collect();
        Ok(Response::new(st))
    }
}
