//! Catalog and core types → API messages, and core errors → gRPC statuses.

use prost_types::Timestamp;
use tonic::Status;

use crate::api::v1 as pb;
use crate::catalog::{BackupRecord, CodecName, Phase, Status as JobState};
use crate::error::{CoreError, ErrorKind};
use crate::jobs::JobUpdate;
use crate::ops::DeleteEffect;

pub fn timestamp_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ms_of(t: &Timestamp) -> i64 {
    t.seconds * 1000 + (t.nanos as i64) / 1_000_000
}

pub fn job_status(s: JobState) -> pb::JobStatus {
    match s {
        JobState::Queued => pb::JobStatus::Queued,
        JobState::Running => pb::JobStatus::Running,
        JobState::Succeeded => pb::JobStatus::Succeeded,
        JobState::Failed => pb::JobStatus::Failed,
        JobState::Cancelled => pb::JobStatus::Cancelled,
        JobState::Interrupted => pb::JobStatus::Interrupted,
    }
}

pub fn job_state(s: pb::JobStatus) -> Option<JobState> {
    Some(match s {
        pb::JobStatus::Unspecified => return None,
        pb::JobStatus::Queued => JobState::Queued,
        pb::JobStatus::Running => JobState::Running,
        pb::JobStatus::Succeeded => JobState::Succeeded,
        pb::JobStatus::Failed => JobState::Failed,
        pb::JobStatus::Cancelled => JobState::Cancelled,
        pb::JobStatus::Interrupted => JobState::Interrupted,
    })
}

pub fn phase(p: Phase) -> pb::Phase {
    match p {
        Phase::Queued => pb::Phase::Queued,
        Phase::Scanning => pb::Phase::Scanning,
        Phase::Hashing => pb::Phase::Hashing,
        Phase::Writing => pb::Phase::Writing,
        Phase::Finalizing => pb::Phase::Finalizing,
        Phase::Restoring => pb::Phase::Restoring,
        Phase::Verifying => pb::Phase::Verifying,
        Phase::Done => pb::Phase::Done,
        Phase::PreBackupHooks => pb::Phase::PreBackupHooks,
        Phase::PostBackupHooks => pb::Phase::PostBackupHooks,
        Phase::Uploading => pb::Phase::Uploading,
    }
}

/// The API's compression enum for a codec; a plugin's codec is
/// `Unspecified` there and named in the message's `codec` field.
pub fn compression(c: &CodecName) -> pb::Compression {
    match c {
        CodecName::None => pb::Compression::None,
        CodecName::Xpress => pb::Compression::Xpress,
        CodecName::Lzx => pb::Compression::Lzx,
        CodecName::Plugin(_) => pb::Compression::Unspecified,
    }
}

/// A deletion's outcome as the API reports it: what happened, and the
/// archive's size before and after (0 and 0 unless it was rebuilt).
pub fn delete_effect(e: DeleteEffect) -> (pb::DeleteOutcome, u64, u64) {
    match e {
        DeleteEffect::Rebuilt { before, after } => (pb::DeleteOutcome::Rebuilt, before, after),
        DeleteEffect::MarkedRemoved => (pb::DeleteOutcome::MarkedRemoved, 0, 0),
        DeleteEffect::RecordOnly => (pb::DeleteOutcome::RecordOnly, 0, 0),
    }
}

pub fn backup(r: &BackupRecord) -> pb::Backup {
    pb::Backup {
        uuid: r.uuid.clone(),
        status: job_status(r.status()) as i32,
        phase: phase(r.phase) as i32,
        source: r.source.clone(),
        destination: r.destination.clone(),
        compression: compression(&r.compression) as i32,
        codec: r.compression.to_string(),
        name: r.name.clone(),
        description: r.description.clone(),
        excludes: r.excludes.clone(),
        image_index: r.image_index,
        files: r.files,
        directories: r.directories,
        bytes_total: r.bytes_total,
        bytes_read: r.bytes_read,
        bytes_stored: r.bytes_stored,
        files_unchanged: r.files_unchanged,
        created_at: Some(timestamp_ms(r.created_at)),
        started_at: r.started_at.map(timestamp_ms),
        finished_at: r.finished_at.map(timestamp_ms),
        error: r.error.clone(),
        warnings: r.warnings.clone(),
        plugins: r.plugins.clone(),
        schedule_id: r.schedule_id.clone(),
        error_code: r.failure.map_or(0, |k| code(k) as i32),
    }
}

pub fn progress(u: &JobUpdate) -> pb::Progress {
    let p = &u.progress;
    pb::Progress {
        phase: phase(p.phase) as i32,
        files_done: p.files_done,
        files_total: p.files_total,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        bytes_per_second: p.bytes_per_second,
        updated_at: Some(timestamp_ms(crate::catalog::now_ms())),
        bytes_uploaded: p.bytes_uploaded,
    }
}

pub fn status(e: CoreError) -> Status {
    Status::new(code(e.kind()), e.to_string())
}

/// The gRPC code of a kind of failure.
pub fn code(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::Conflict => tonic::Code::Aborted,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::DataLoss => tonic::Code::DataLoss,
        ErrorKind::Cancelled => tonic::Code::Cancelled,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::OutOfRange => tonic::Code::OutOfRange,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    }
}

/// Offset-based page tokens: opaque to clients, decimal inside.
pub fn page(req: Option<&pb::PageRequest>) -> Result<(u64, u64), Status> {
    let size = req.map(|p| p.page_size).unwrap_or(0);
    let size = if size == 0 { 100 } else { size.min(1000) } as u64;
    let offset = match req.map(|p| p.page_token.as_str()).unwrap_or("") {
        "" => 0,
        t => t
            .strip_prefix("o")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Status::invalid_argument("bad page_token"))?,
    };
    Ok((offset, size))
}

pub fn page_info(offset: u64, returned: usize, total: u64) -> pb::PageInfo {
    let next = offset + returned as u64;
    pb::PageInfo {
        next_page_token: if next < total {
            format!("o{next}")
        } else {
            String::new()
        },
        total,
    }
}

pub fn retention_from_pb(r: Option<&pb::RetentionPolicy>) -> crate::catalog::schedules::RetentionSpec {
    let Some(r) = r else { return Default::default() };
    let on = |n: u32| (n > 0).then_some(n);
    crate::catalog::schedules::RetentionSpec {
        keep_last: on(r.keep_last),
        keep_hourly: on(r.keep_hourly),
        keep_daily: on(r.keep_daily),
        keep_weekly: on(r.keep_weekly),
        keep_monthly: on(r.keep_monthly),
        keep_yearly: on(r.keep_yearly),
        keep_within: (!r.keep_within.trim().is_empty()).then(|| r.keep_within.trim().to_string()),
    }
}

pub fn retention_to_pb(r: &crate::catalog::schedules::RetentionSpec) -> pb::RetentionPolicy {
    pb::RetentionPolicy {
        keep_last: r.keep_last.unwrap_or(0),
        keep_hourly: r.keep_hourly.unwrap_or(0),
        keep_daily: r.keep_daily.unwrap_or(0),
        keep_weekly: r.keep_weekly.unwrap_or(0),
        keep_monthly: r.keep_monthly.unwrap_or(0),
        keep_yearly: r.keep_yearly.unwrap_or(0),
        keep_within: r.keep_within.clone().unwrap_or_default(),
    }
}

/// A remote archive's check, as the API reports it.
pub fn chain_check(c: &crate::remote::check::ChainCheck) -> pb::CheckResult {
    pb::CheckResult {
        objects: c.objects,
        snapshots: c.snapshots,
        missing_objects: c.missing_objects.clone(),
        changed_objects: c.changed_objects.clone(),
        unknown_objects: c.unknown_objects.clone(),
        blobs_read: c.blobs_read,
        bytes_read: c.bytes_read,
        damaged_blobs: c.damaged_blobs.clone(),
        blobs_dropped: c.blobs_dropped,
        damaged: c
            .damaged
            .iter()
            .map(|d| pb::DamagedSnapshot {
                backup_uuid: d.backup_uuid.clone(),
                problem: d.problem.clone(),
                files: d.files.clone(),
                files_total: d.files_total,
                lost: d.lost,
                forgotten: d.forgotten,
            })
            .collect(),
        repaired: c.repaired,
        problems_left: c.problems_left() as u32,
    }
}
