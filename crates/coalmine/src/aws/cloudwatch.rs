use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDataResult, MetricStat, StateValue};
use aws_sdk_cloudwatch::Client;

use super::error::{aws_error, service_code};
use crate::domain::deployment::TRIPWIRE_NAMESPACE;
use crate::domain::error::{Error, Result};
use crate::domain::event::TARGET_TAG;
use crate::domain::event::{AlarmState, Confirmation};
use crate::domain::metrics::{
    CustomGate, GateKind, MetricSnapshot, Per, SideMetrics, PERCENTILE_LEVELS, VERSION_PLACEHOLDER,
};
use crate::domain::target::{Role, StandardMetrics, Target, UnitMetrics};
use crate::ports::{AlarmSource, MetricQuery, MetricSource, Tripwires};

const TRIPWIRE_METRIC: &str = "Tripped";

pub struct CloudWatchAlarms {
    client: Client,
}

impl CloudWatchAlarms {
    pub fn new(client: Client) -> Self {
        CloudWatchAlarms { client }
    }
}

impl AlarmSource for CloudWatchAlarms {
    async fn target_tag(&self, alarm_arn: &str) -> Result<Option<String>> {
        let out = match self.client.list_tags_for_resource().resource_arn(alarm_arn).send().await {
            Ok(out) => out,
            // An alarm deleted since it fired has no tags to honour; AWS says
            // ResourceNotFoundException, the local emulator ResourceNotFound.
            Err(e) if matches!(service_code(&e), Some(("ResourceNotFoundException" | "ResourceNotFound", _))) => {
                return Ok(None)
            }
            Err(e) => return Err(aws_error("cloudwatch:ListTagsForResource", e)),
        };
        Ok(out.tags.unwrap_or_default().into_iter().find(|t| t.key() == Some(TARGET_TAG)).and_then(|t| t.value))
    }

    async fn states(&self, names: &[String]) -> Result<Vec<(String, AlarmState)>> {
        let mut states = Vec::with_capacity(names.len());
        for chunk in names.chunks(100) {
            let mut next = None;
            loop {
                let out = self
                    .client
                    .describe_alarms()
                    .set_alarm_names(Some(chunk.to_vec()))
                    .set_next_token(next)
                    .send()
                    .await
                    .map_err(|e| aws_error("cloudwatch:DescribeAlarms", e))?;
                let metric = out.metric_alarms.unwrap_or_default().into_iter().map(|a| (a.alarm_name, a.state_value));
                let composite =
                    out.composite_alarms.unwrap_or_default().into_iter().map(|a| (a.alarm_name, a.state_value));
                for (name, state) in metric.chain(composite) {
                    if let (Some(name), Some(state)) = (name, state) {
                        states.push((name, state_of(&state)));
                    }
                }
                next = out.next_token;
                if next.is_none() {
                    break;
                }
            }
        }
        Ok(states)
    }

    async fn confirm(&self, name: &str, entered_at: &str) -> Result<Confirmation> {
        self.confirm_alarm(name, entered_at).await
    }
}

/// How far from a notification's time its alarm's entry into ALARM may be recorded: the
/// history keeps whole seconds, and the notification is written after the change.
const CONFIRM_SLACK_SECONDS: i64 = 120;

impl CloudWatchAlarms {
    /// Whether the alarm's history holds its entry into ALARM near `at`.
    async fn entered_alarm_near(&self, name: &str, at: i64) -> Result<bool> {
        let mut next = None;
        loop {
            let out = self
                .client
                .describe_alarm_history()
                .alarm_name(name)
                .history_item_type(aws_sdk_cloudwatch::types::HistoryItemType::StateUpdate)
                .start_date(DateTime::from_secs(at - CONFIRM_SLACK_SECONDS))
                .end_date(DateTime::from_secs(at + CONFIRM_SLACK_SECONDS))
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| aws_error("cloudwatch:DescribeAlarmHistory", e))?;
            let entered = out.alarm_history_items().iter().any(|item| {
                item.history_data()
                    .and_then(|data| serde_json::from_str::<serde_json::Value>(data).ok())
                    .is_some_and(|data| data.pointer("/newState/stateValue").and_then(|v| v.as_str()) == Some("ALARM"))
            });
            if entered {
                return Ok(true);
            }
            next = out.next_token;
            if next.is_none() {
                return Ok(false);
            }
        }
    }
}

impl CloudWatchAlarms {
    async fn confirm_alarm(&self, name: &str, entered_at: &str) -> Result<Confirmation> {
        let state = self.states(&[name.to_owned()]).await?.into_iter().find(|(n, _)| n == name).map(|(_, s)| s);
        let Some(state) = state else { return Ok(Confirmation::NoSuchAlarm) };
        if state == AlarmState::Alarm {
            return Ok(Confirmation::InAlarm);
        }
        // A time that cannot be read cannot be matched with the history.
        let Ok(at) = DateTime::from_str(entered_at, aws_smithy_types::date_time::Format::DateTimeWithOffset) else {
            return Ok(Confirmation::NotFired(state));
        };
        Ok(if self.entered_alarm_near(name, at.secs()).await? {
            Confirmation::FiredThen
        } else {
            Confirmation::NotFired(state)
        })
    }
}

impl Tripwires for CloudWatchAlarms {
    async fn ensure_tripwire(&self, alarm: &str, endpoint: &str) -> Result<()> {
        // A metric only coalmine puts: the alarm stays OK (missing data is not breaching)
        // until `trip` sets it, and puts a datapoint that keeps it in ALARM for a period.
        self.client
            .put_metric_alarm()
            .alarm_name(alarm)
            .alarm_description(format!(
                "coalmine's tripwire for {endpoint}: listed among its guardrail deployments' auto-rollback alarms, \
                 tripped by coalmine to roll a deployment back"
            ))
            .namespace(TRIPWIRE_NAMESPACE)
            .metric_name(TRIPWIRE_METRIC)
            .dimensions(Dimension::builder().name("Alarm").value(alarm).build())
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(0.0)
            .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
            .treat_missing_data("notBreaching")
            .send()
            .await
            .map_err(|e| aws_error("cloudwatch:PutMetricAlarm", e))?;
        Ok(())
    }

    async fn trip(&self, alarm: &str) -> Result<()> {
        self.client
            .set_alarm_state()
            .alarm_name(alarm)
            .state_value(StateValue::Alarm)
            .state_reason("coalmine stopped the deployment")
            .send()
            .await
            .map_err(|e| aws_error("cloudwatch:SetAlarmState", e))?;
        let datum = aws_sdk_cloudwatch::types::MetricDatum::builder()
            .metric_name(TRIPWIRE_METRIC)
            .dimensions(Dimension::builder().name("Alarm").value(alarm).build())
            .value(1.0)
            .build();
        self.client
            .put_metric_data()
            .namespace(TRIPWIRE_NAMESPACE)
            .metric_data(datum)
            .send()
            .await
            .map_err(|e| aws_error("cloudwatch:PutMetricData", e))?;
        Ok(())
    }
}

fn state_of(state: &StateValue) -> AlarmState {
    match state {
        StateValue::Alarm => AlarmState::Alarm,
        StateValue::InsufficientData => AlarmState::InsufficientData,
        _ => AlarmState::Ok,
    }
}

/// Canary-vs-stable metrics in one GetMetricData call. Rates are computed here from two
/// `Sum`s (no metric math: cheaper to reason about, and the local AWS lacks it).
pub struct CloudWatchMetrics {
    client: Client,
}

impl CloudWatchMetrics {
    pub fn new(client: Client) -> Self {
        CloudWatchMetrics { client }
    }
}

// The shadow function's own: each side is a version it asked (see `mirror`).
static SHADOW: StandardMetrics = StandardMetrics {
    namespace: crate::domain::shadow::NAMESPACE,
    requests: crate::domain::shadow::metric::SHADOWED,
    errors: crate::domain::shadow::metric::ERRORS,
    latency: crate::domain::shadow::metric::LATENCY,
    latency_to_ms: 1.0,
};

fn shadow_dimensions(release: &str, version: &str) -> Vec<Dimension> {
    vec![
        Dimension::builder().name("Release").value(release).build(),
        Dimension::builder().name("Version").value(version).build(),
    ]
}

/// One side's dimensions, as its target's kind names them.
fn side_dimensions(target: &Target, id: &str, config: Option<&str>, role: Role) -> Vec<Dimension> {
    dimensions(target.metric_dimensions(id, config, role))
}

/// Named values as CloudWatch's dimensions.
fn dimensions(named: Vec<(&'static str, String)>) -> Vec<Dimension> {
    named.into_iter().map(|(name, value)| Dimension::builder().name(name).value(value).build()).collect()
}

fn query(
    id: String,
    namespace: &str,
    metric: &str,
    dimensions: Vec<Dimension>,
    stat: &str,
    period: i32,
) -> MetricDataQuery {
    let metric = Metric::builder().namespace(namespace).metric_name(metric).set_dimensions(Some(dimensions)).build();
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(MetricStat::builder().metric(metric).stat(stat).period(period).build())
        .return_data(true)
        .build()
}

/// GetMetricData's most queries in one call.
const QUERIES_PER_CALL: usize = 500;

/// The query ids: `{side}_{what}` with side `c` (canary), `s` (stable), `p` (a cohort's
/// pinned units), or one of those and a replicate group (`c7`).
fn ids(side: &str) -> [String; 3] {
    [format!("{side}_req"), format!("{side}_err"), format!("{side}_p95")]
}

impl MetricSource for CloudWatchMetrics {
    async fn fetch(&self, q: &MetricQuery<'_>) -> Result<MetricSnapshot> {
        // A cohort's sides are its routers' (decision 0021): by how each unit was assigned,
        // and in the sixteen groups of units the judge reads their spread from.
        let units = q.target.unit_metrics().filter(|_| q.shadow_of.is_none());
        let standard = match (&units, q.shadow_of) {
            (Some(units), _) => units.metrics,
            (None, Some(_)) => &SHADOW,
            (None, None) => standard(q.target)?,
        };
        // One datapoint per window: the period covers the stage so far.
        let window = q.end_epoch.saturating_sub(q.start_epoch).max(60);
        let period = i32::try_from(window.div_ceil(60) * 60).unwrap_or(i32::MAX - 59);
        let mut values: Values = Vec::new();
        let queries = match &units {
            Some(units) => unit_queries(q, units, period),
            None => queries(q, standard, period),
        };
        for chunk in queries.chunks(QUERIES_PER_CALL) {
            for result in self.results(chunk.to_vec(), q.start_epoch, q.end_epoch).await? {
                let id = result.id.unwrap_or_default();
                let vals = result.values.unwrap_or_default();
                match values.iter_mut().find(|(i, _)| *i == id) {
                    Some((_, v)) => v.extend(vals),
                    None => values.push((id, vals)),
                }
            }
        }
        let mut snapshot = MetricSnapshot {
            canary: side(&values, "c", q, standard),
            stable: side(&values, "s", q, standard),
            pinned: None,
        };
        if units.is_some() {
            let groups = |prefix: char| {
                (0..coalmine_router::REPLICATES).map(|r| side(&values, &format!("{prefix}{r}"), q, standard)).collect()
            };
            snapshot.canary.replicates = groups('c');
            snapshot.stable.replicates = groups('s');
            by_unit(&mut snapshot.canary, &side(&values, "ca", q, standard));
            by_unit(&mut snapshot.stable, &side(&values, "sa", q, standard));
            snapshot.pinned = q.pins.then(|| {
                let mut pinned = side(&values, "p", q, standard);
                by_unit(&mut pinned, &side(&values, "pa", q, standard));
                pinned
            });
        }
        Ok(snapshot)
    }

    async fn requests_per_minute(&self, target: &Target, id: &str, start: u64, end: u64) -> Result<Vec<(u64, f64)>> {
        let standard = standard(target)?;
        let dims = side_dimensions(target, id, None, Role::Stable);
        let requests = query("req".to_owned(), standard.namespace, standard.requests, dims, "Sum", 60);
        let mut minutes: Vec<(u64, f64)> = Vec::new();
        for result in self.results(vec![requests], start, end).await? {
            let at = result.timestamps().iter().map(|t| u64::try_from(t.secs()).unwrap_or_default());
            minutes.extend(at.zip(result.values().iter().copied()));
        }
        minutes.sort_by_key(|(at, _)| *at);
        Ok(minutes)
    }
}

fn standard(target: &Target) -> Result<&'static StandardMetrics> {
    target.standard_metrics().ok_or_else(|| Error::Unsupported {
        target: target.clone(),
        detail: "an Azure ML endpoint's metrics are Azure Monitor's, not CloudWatch's".into(),
    })
}

/// Each result's values by query id.
type Values = Vec<(String, Vec<f64>)>;

impl CloudWatchMetrics {
    /// Every page of one GetMetricData; a failed query inside a 200 is an error, not a zero.
    async fn results(
        &self,
        queries: Vec<MetricDataQuery>,
        start_epoch: u64,
        end_epoch: u64,
    ) -> Result<Vec<MetricDataResult>> {
        let start = DateTime::from_secs(i64::try_from(start_epoch).unwrap_or(i64::MAX));
        let end = DateTime::from_secs(i64::try_from(end_epoch.max(start_epoch + 1)).unwrap_or(i64::MAX));
        let mut results = Vec::new();
        let mut next = None;
        loop {
            let out = self
                .client
                .get_metric_data()
                .set_metric_data_queries(Some(queries.clone()))
                .start_time(start)
                .end_time(end)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| aws_error("cloudwatch:GetMetricData", e))?;
            for result in out.metric_data_results.unwrap_or_default() {
                if let Some(code) =
                    result.status_code.as_ref().filter(|c| c.as_str() == "InternalError" || c.as_str() == "Forbidden")
                {
                    return Err(Error::Service {
                        operation: "cloudwatch:GetMetricData",
                        detail: format!("query {} returned {}", result.id.as_deref().unwrap_or("?"), code.as_str()),
                        retryable: true,
                    });
                }
                results.push(result);
            }
            next = out.next_token;
            if next.is_none() {
                return Ok(results);
            }
        }
    }
}

/// Both sides' queries: requests, errors, p95, the percentiles the judge reads the
/// tail off, and each custom gate (`{version}` in a dimension becoming the side's id).
fn queries(q: &MetricQuery<'_>, standard: &StandardMetrics, period: i32) -> Vec<MetricDataQuery> {
    let mut queries = Vec::new();
    let (canary_config, stable_config) = q.configs.unzip();
    let sides = [('c', q.canary, canary_config, Role::Candidate), ('s', q.stable, stable_config, Role::Stable)];
    for (side, id, config, role) in sides {
        let dims = match q.shadow_of {
            Some(release) => shadow_dimensions(release, id),
            None => side_dimensions(q.target, id, config, role),
        };
        queries.extend(standard_queries(&side.to_string(), standard, &dims, period, true));
        for (i, gate) in q.custom.iter().enumerate() {
            queries.extend(gate_queries(&side.to_string(), i, gate, id, period));
        }
    }
    queries
}

/// A side's requests, errors, p95 (with `p95`) and the percentiles the judge reads.
fn standard_queries(
    side: &str,
    standard: &StandardMetrics,
    dims: &[Dimension],
    period: i32,
    p95: bool,
) -> Vec<MetricDataQuery> {
    let [req, err, p95_id] = ids(side);
    let mut queries = vec![
        query(req, standard.namespace, standard.requests, dims.to_vec(), "Sum", period),
        query(err, standard.namespace, standard.errors, dims.to_vec(), "Sum", period),
    ];
    if p95 {
        queries.push(query(p95_id, standard.namespace, standard.latency, dims.to_vec(), "p95", period));
    }
    for (i, level) in PERCENTILE_LEVELS.iter().enumerate() {
        let stat = format!("p{level}");
        queries.push(query(format!("{side}_q{i}"), standard.namespace, standard.latency, dims.to_vec(), &stat, period));
    }
    queries
}

/// A cohort release's queries: the drawn units on the candidate (`c`) and the units on
/// the stable (`s`), each whole and in its replicate groups (`c0`..`c15`); the pinned
/// units whole (`p`) when the release pins some; the custom gates by version, and also by
/// assignment (`ca`, `sa`, `pa`) and in groups, for a handler that publishes them by unit.
fn unit_queries(q: &MetricQuery<'_>, units: &UnitMetrics, period: i32) -> Vec<MetricDataQuery> {
    let dims =
        |id: &str, assignment: &str, replicate: Option<u32>| dimensions(units.dimensions(id, assignment, replicate));
    let mut queries = Vec::new();
    let mut sides = vec![('c', q.canary, "drawn"), ('s', q.stable, "stable")];
    if q.pins {
        sides.push(('p', q.canary, "pinned"));
    }
    for (side, id, assignment) in sides {
        queries.extend(standard_queries(&side.to_string(), units.metrics, &dims(id, assignment, None), period, true));
        for (i, gate) in q.custom.iter().enumerate() {
            if side != 'p' {
                queries.extend(gate_queries(&side.to_string(), i, gate, id, period));
            }
            // As the handler publishes them by unit, if it does: `ca`, `sa`, `pa` whole.
            queries.extend(unit_gate_queries(&format!("{side}a"), i, gate, id, Some((assignment, None)), period));
        }
        if side == 'p' {
            continue;
        }
        for r in 0..coalmine_router::REPLICATES {
            let group = format!("{side}{r}");
            queries.extend(standard_queries(&group, units.metrics, &dims(id, assignment, Some(r)), period, false));
            for (i, gate) in q.custom.iter().enumerate() {
                queries.extend(unit_gate_queries(&group, i, gate, id, Some((assignment, Some(r))), period));
            }
        }
    }
    queries
}

/// A cohort side's custom gates as its handler published them by unit, where it did:
/// those replace the side's by version (which count pinned and drawn units together).
fn by_unit(side: &mut SideMetrics, published: &SideMetrics) {
    for i in 0..published.custom.len() {
        let has = published.custom[i].is_some() || published.custom_counts.get(i).copied().flatten().is_some();
        if !has {
            continue;
        }
        if let (Some(c), Some(n), Some(g)) =
            (side.custom.get_mut(i), side.custom_counts.get_mut(i), side.custom_percentiles.get_mut(i))
        {
            *c = published.custom[i];
            *n = published.custom_counts.get(i).copied().flatten();
            *g = published.custom_percentiles.get(i).cloned().unwrap_or_default();
        }
    }
}

/// A custom gate's queries on one side: its statistic (`x`), and what its test needs
/// besides: a rate's denominator (`d`), a distribution's number of values (`n`) and its
/// percentiles (`g`).
fn gate_queries(side: &str, i: usize, gate: &CustomGate, id: &str, period: i32) -> Vec<MetricDataQuery> {
    unit_gate_queries(side, i, gate, id, None, period)
}

/// The same, for the metric as the handler publishes it by unit (`coalmine-emf`'s
/// `by_unit`): its dimensions and the unit's `Assignment`, and `Replicate` when given.
fn unit_gate_queries(
    side: &str,
    i: usize,
    gate: &CustomGate,
    id: &str,
    unit: Option<(&str, Option<u32>)>,
    period: i32,
) -> Vec<MetricDataQuery> {
    let dims = |dimensions: &std::collections::BTreeMap<String, String>| -> Vec<Dimension> {
        let mut dims: Vec<Dimension> = dimensions
            .iter()
            .map(|(k, v)| Dimension::builder().name(k).value(v.replace(VERSION_PLACEHOLDER, id)).build())
            .collect();
        if let Some((assignment, replicate)) = unit {
            dims.push(Dimension::builder().name("Assignment").value(assignment).build());
            dims.extend(replicate.map(|r| Dimension::builder().name("Replicate").value(r.to_string()).build()));
        }
        dims
    };
    let (namespace, metric) = (gate.namespace.as_str(), gate.metric.as_str());
    let mut queries = Vec::new();
    match gate.kind() {
        Some(GateKind::Distribution { .. }) => {
            // One datapoint over the window: percentiles of two periods do not combine.
            queries.push(query(format!("{side}_x{i}"), namespace, metric, dims(&gate.dimensions), &gate.stat, period));
            queries.push(query(
                format!("{side}_n{i}"),
                namespace,
                metric,
                dims(&gate.dimensions),
                "SampleCount",
                period,
            ));
            for (j, level) in gate.levels().iter().enumerate() {
                let stat = format!("p{level}");
                queries.push(query(
                    format!("{side}_g{i}_{j}"),
                    namespace,
                    metric,
                    dims(&gate.dimensions),
                    &stat,
                    period,
                ));
            }
        }
        _ => {
            let gate_period = i32::try_from(gate.period_seconds).unwrap_or(60).max(period);
            queries.push(query(
                format!("{side}_x{i}"),
                namespace,
                metric,
                dims(&gate.dimensions),
                &gate.stat,
                gate_period,
            ));
            if let Some(Per::Metric { namespace, metric, dimensions }) = &gate.per {
                queries.push(query(format!("{side}_d{i}"), namespace, metric, dims(dimensions), "Sum", gate_period));
            }
        }
    }
    queries
}

/// One side's metrics from the results: counts summed, the worse of two periods'
/// percentiles, each custom gate by its statistic.
fn side(values: &Values, side: &str, q: &MetricQuery<'_>, standard: &StandardMetrics) -> SideMetrics {
    let get = |id: &str| values.iter().find(|(i, _)| i == id).map(|(_, v)| v.as_slice()).unwrap_or_default();
    let worst = |id: &str| get(id).iter().copied().reduce(f64::max).map(|v| v * standard.latency_to_ms);
    let [req, err, p95] = ids(side);
    SideMetrics {
        requests: total(get(&req)),
        errors: total(get(&err)),
        // Windows spanning two periods give two p95s: keep the worse.
        p95_ms: worst(&p95),
        custom: (0..q.custom.len())
            .map(|i| {
                let vals = get(&format!("{side}_x{i}"));
                match q.custom[i].stat.as_str() {
                    "Sum" | "SampleCount" => (!vals.is_empty()).then(|| total(vals)),
                    _ => mean(vals),
                }
            })
            .collect(),
        percentiles: (0..PERCENTILE_LEVELS.len()).map(|i| worst(&format!("{side}_q{i}"))).collect(),
        custom_counts: (0..q.custom.len())
            .map(|i| {
                let counted = [format!("{side}_d{i}"), format!("{side}_n{i}")];
                counted.iter().map(|id| get(id)).find(|v| !v.is_empty()).map(total)
            })
            .collect(),
        custom_percentiles: q
            .custom
            .iter()
            .enumerate()
            .map(|(i, gate)| (0..gate.levels().len()).map(|j| mean(get(&format!("{side}_g{i}_{j}")))).collect())
            .collect(),
        replicates: Vec::new(),
    }
}

/// One value from a window that spanned two periods: a statistic that is not a count
/// cannot be added up, and either period alone would drop half the window.
fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// A sum that is `0`, not `-0`, over no values: `f64`'s `Sum` starts at negative zero,
/// which reads "-0 requests" in a message.
fn total(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() + 0.0
}

/// PutMetricData, in calls of at most [`DATA_PER_CALL`] data: the shadow function's
/// counts and latencies (a distribution as values, so CloudWatch has its percentiles).
pub struct CloudWatchSink {
    client: Client,
}

/// PutMetricData takes up to 1 000 data a call, each up to 150 values.
pub const DATA_PER_CALL: usize = 1_000;
pub const VALUES_PER_DATUM: usize = 150;

impl CloudWatchSink {
    pub fn new(client: Client) -> Self {
        CloudWatchSink { client }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        CloudWatchSink { client: Client::new(sdk) }
    }
}

impl crate::ports::MetricSink for CloudWatchSink {
    async fn put(&self, namespace: &str, data: &[crate::ports::Datum]) -> Result<()> {
        let mut datums = Vec::new();
        for datum in data {
            let dimensions: Vec<Dimension> =
                datum.dimensions.iter().map(|(n, v)| Dimension::builder().name(*n).value(v).build()).collect();
            let unit = if datum.milliseconds {
                aws_sdk_cloudwatch::types::StandardUnit::Milliseconds
            } else {
                aws_sdk_cloudwatch::types::StandardUnit::Count
            };
            for values in datum.values.chunks(VALUES_PER_DATUM) {
                let builder = aws_sdk_cloudwatch::types::MetricDatum::builder()
                    .metric_name(datum.metric)
                    .set_dimensions(Some(dimensions.clone()))
                    .unit(unit.clone());
                datums.push(match values {
                    [one] => builder.value(*one).build(),
                    many => builder.set_values(Some(many.to_vec())).build(),
                });
            }
        }
        for chunk in datums.chunks(DATA_PER_CALL) {
            self.client
                .put_metric_data()
                .namespace(namespace)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| aws_error("cloudwatch:PutMetricData", e))?;
        }
        Ok(())
    }
}
