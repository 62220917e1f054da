//! ScheduleService: thin over `crate::scheduler`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{convert, Shared};
use crate::api::v1 as pb;
use crate::catalog::schedules::ScheduleRecord;
use crate::error::CoreError;
use crate::scheduler::{ScheduleSpec, Scheduler};

pub struct ScheduleApi {
    shared: Arc<Shared>,
}

impl ScheduleApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        ScheduleApi { shared }
    }

    fn scheduler(&self) -> Arc<Scheduler> {
        self.shared.scheduler.clone()
    }
}

fn schedule(s: &Scheduler, r: &ScheduleRecord) -> pb::Schedule {
    pb::Schedule {
        uuid: r.id.clone(),
        cron: r.cron.clone(),
        source: r.source.clone(),
        destination: r.destination.clone(),
        compression: r
            .compression
            .as_ref()
            .map_or(pb::Compression::Unspecified, convert::compression) as i32,
        excludes: r.excludes.clone(),
        plugins: r.plugins.clone(),
        retention: Some(convert::retention_to_pb(&r.retention)),
        enabled: r.enabled,
        next_run_at: s.next_run(r).map(convert::timestamp_ms),
        last_run_at: r.last_run_at.map(convert::timestamp_ms),
        last_backup_uuid: r.last_backup_uuid.clone(),
        // Empty before the first run.
        last_status: r.last_status.map_or(pb::JobStatus::Unspecified, convert::job_status) as i32,
        time_zone: r.time_zone.clone(),
        codec: r.compression.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        last_error: r.last_error.clone(),
        name: r.name.clone(),
        origin: r.origin.as_str().into(),
        skipped_runs: r.skipped,
    }
}

/// The spec of a request's schedule (codec wins over the enum).
fn spec(s: Option<pb::Schedule>) -> Result<ScheduleSpec, Status> {
    let s = s.ok_or_else(|| Status::invalid_argument("the schedule is missing"))?;
    let compression = if !s.codec.is_empty() {
        s.codec.clone()
    } else {
        match pb::Compression::try_from(s.compression).unwrap_or(pb::Compression::Unspecified) {
            pb::Compression::None => "none".into(),
            pb::Compression::Xpress => "xpress".into(),
            pb::Compression::Lzx => "lzx".into(),
            _ => String::new(),
        }
    };
    Ok(ScheduleSpec {
        name: s.name,
        cron: s.cron,
        time_zone: s.time_zone,
        source: s.source,
        destination: s.destination,
        plugins: s.plugins,
        compression,
        excludes: s.excludes,
        retention: convert::retention_from_pb(s.retention.as_ref()),
        enabled: s.enabled,
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, CoreError> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(convert::status)
}

#[tonic::async_trait]
impl pb::schedule_service_server::ScheduleService for ScheduleApi {
    async fn create_schedule(&self, req: Request<pb::CreateScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let spec = spec(req.into_inner().schedule)?;
        let s = self.scheduler();
        let rec = blocking({
            let s = s.clone();
            move || s.create(&spec)
        })
        .await?;
        Ok(Response::new(schedule(&s, &rec)))
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let (offset, limit) = convert::page(req.into_inner().page.as_ref())?;
        let s = self.scheduler();
        let all = self
            .shared
            .jobs
            .catalog()
            .list_schedules()
            .map_err(|e| Status::internal(e.to_string()))?;
        let page: Vec<pb::Schedule> = all
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(|r| schedule(&s, r))
            .collect();
        Ok(Response::new(pb::ListSchedulesResponse {
            page: Some(convert::page_info(offset, page.len(), all.len() as u64)),
            schedules: page,
        }))
    }

    async fn get_schedule(&self, req: Request<pb::GetScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let s = self.scheduler();
        let rec = s.get(&req.into_inner().uuid).map_err(convert::status)?;
        Ok(Response::new(schedule(&s, &rec)))
    }

    async fn update_schedule(&self, req: Request<pb::UpdateScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let r = req.into_inner();
        let id = r.schedule.as_ref().map(|s| s.uuid.clone()).unwrap_or_default();
        let spec = spec(r.schedule)?;
        let s = self.scheduler();
        let rec = blocking({
            let s = s.clone();
            move || s.update(&id, &spec)
        })
        .await?;
        Ok(Response::new(schedule(&s, &rec)))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        self.scheduler()
            .delete(&req.into_inner().uuid)
            .map_err(convert::status)?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn enable_schedule(&self, req: Request<pb::EnableScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let r = req.into_inner();
        let s = self.scheduler();
        let rec = s.set_enabled(&r.uuid, r.enabled).map_err(convert::status)?;
        Ok(Response::new(schedule(&s, &rec)))
    }

    async fn run_now(&self, req: Request<pb::RunNowRequest>) -> Result<Response<pb::RunNowResponse>, Status> {
        let id = req.into_inner().uuid;
        let s = self.scheduler();
        let uuid = blocking(move || s.run_now(&id)).await?;
        Ok(Response::new(pb::RunNowResponse { backup_uuid: uuid }))
    }
}
