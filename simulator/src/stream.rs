//! Streaming a whole country's week with bounded memory: one school unit
//! at a time is generated, simulated up to the end of the week, written out
//! as SS 12000 JSON lines and dropped.

use std::io::Write;

use chrono::Duration;

use crate::calendar::iso_monday;
use crate::sim::Simulation;
use crate::ss12000::ENDPOINTS;
use crate::world::World;
use crate::SimConfig;

/// What a stream produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub units: u32,
    pub items: u64,
    pub bytes: u64,
    pub calendar_events: u64,
    pub attendances: u64,
}

/// Write one ISO week as JSON lines (`{"endpoint": …, "item": …}`): every
/// unit's organisation, persons, duties, groups, syllabuses and activities
/// as they stand at the end of the week, and the week's calendar events and
/// attendance records. `units` limits the number of units (for sampling);
/// `progress` is called after each unit.
pub fn stream_week(
    config: &SimConfig,
    year: i32,
    week: u32,
    units: Option<u32>,
    out: &mut impl Write,
    mut progress: impl FnMut(&StreamStats),
) -> std::io::Result<StreamStats> {
    let monday = iso_monday(year, week);
    let next_monday = monday + Duration::days(7);
    let total = World::unit_count(config).min(units.unwrap_or(u32::MAX));
    let mut stats = StreamStats::default();
    let mut line = Vec::with_capacity(4096);
    for n in 1..=total {
        let Some(world) = World::generate_unit(config, n) else {
            break;
        };
        let mut sim = Simulation::from_world(config.clone(), world, None)?;
        sim.advance_to(next_monday)?;
        for endpoint in ENDPOINTS {
            let Some(len) = sim.storage_len(endpoint) else {
                continue;
            };
            // Only the unit itself, not the huvudman it shares with every
            // other unit (written once, with the first unit).
            let first = usize::from(*endpoint == "organisations" && n > 1);
            for i in first..len {
                if matches!(*endpoint, "calendarEvents" | "attendances") {
                    let lesson = match *endpoint {
                        "calendarEvents" => &sim.lessons[i],
                        _ => &sim.lessons[sim.records[i].lesson as usize],
                    };
                    if lesson.date < monday || lesson.date >= next_monday {
                        continue;
                    }
                }
                let Some((_, item)) = sim.render(endpoint, i) else {
                    continue;
                };
                line.clear();
                line.extend_from_slice(b"{\"endpoint\":\"");
                line.extend_from_slice(endpoint.as_bytes());
                line.extend_from_slice(b"\",\"item\":");
                serde_json::to_writer(&mut line, &item)?;
                line.extend_from_slice(b"}\n");
                out.write_all(&line)?;
                stats.items += 1;
                stats.bytes += line.len() as u64;
                match *endpoint {
                    "calendarEvents" => stats.calendar_events += 1,
                    "attendances" => stats.attendances += 1,
                    _ => {}
                }
            }
        }
        stats.units += 1;
        progress(&stats);
    }
    out.flush()?;
    Ok(stats)
}
