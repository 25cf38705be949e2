//! The opt-in caches: what the opt-in rules read of every pod and namespace
//! in the cluster, and nothing more.
//!
//! Pods are the biggest list in a cluster and the operator watches all of
//! them, so what it keeps of each one is most of its memory. The rules read
//! a pod's namespace, labels, opt-in annotations and whether it is being
//! deleted; everything else is dropped **while the API server's answer is
//! parsed** ([`Wire`]): `managedFields` (about seven times the rest of a
//! pod's metadata), `kubectl.kubernetes.io/last-applied-configuration` (a
//! copy of the whole object) and the other annotations are skipped by the
//! parser and never allocated. What is kept ([`OptinMeta`]) is a small
//! struct instead of a full `ObjectMeta`: the uid, resourceVersion, owner
//! references and the rest of `ObjectMeta` were an allocation each, per pod,
//! and the cache's keys carry only the name and namespace. Labels and
//! annotations are kept as boxed slices of pairs ([`Pairs`]): a `BTreeMap`
//! allocates a node of ~540 bytes however few entries it holds, which was
//! the biggest single item per pod. The rules read them where they are,
//! through [`optin::KeyValues`] (a binary search over the sorted pairs): a
//! pass over every pod builds no map.
//!
//! Measured at 10,000 pods in `bench/scale` (see its NOTES.md).

use std::{borrow::Cow, collections::BTreeMap, fmt, marker::PhantomData};

use ferrotel_api::optin;
use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource,
    api::ObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, Lookup, Store},
        watcher,
    },
};
use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, Visitor},
};

/// A pod or namespace as the opt-in caches keep it.
#[derive(Debug)]
pub struct OptinMeta<K> {
    /// `None` for a namespace.
    pub namespace: Option<Box<str>>,
    pub name: Box<str>,
    pub labels: Pairs,
    /// Only those [`optin::reads_annotation`] accepts.
    pub annotations: Pairs,
    /// A deletion timestamp is set: the pod is going away.
    pub deleting: bool,
    kind: PhantomData<fn() -> K>,
}

// By hand: derived, both would require `K: Clone`/`K: PartialEq`.
impl<K> Clone for OptinMeta<K> {
    fn clone(&self) -> Self {
        Self {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            deleting: self.deleting,
            kind: PhantomData,
        }
    }
}

impl<K> PartialEq for OptinMeta<K> {
    fn eq(&self, other: &Self) -> bool {
        self.namespace == other.namespace
            && self.name == other.name
            && self.labels == other.labels
            && self.annotations == other.annotations
            && self.deleting == other.deleting
    }
}

impl<K> From<Wire<K>> for OptinMeta<K> {
    fn from(wire: Wire<K>) -> Self {
        let meta = wire.metadata;
        Self {
            namespace: meta.namespace.map(String::into_boxed_str),
            name: meta.name.unwrap_or_default().into_boxed_str(),
            labels: Pairs::from(meta.labels.unwrap_or_default()),
            annotations: Pairs::from(meta.annotations.unwrap_or_default()),
            deleting: meta.deletion_timestamp.is_some(),
            kind: PhantomData,
        }
    }
}

/// Labels or annotations, in key order (each key once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairs(Box<[(Box<str>, Box<str>)]>);

impl Pairs {
    /// As a map, for callers that add to it.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Relies on the key order [`From<BTreeMap>`] gives the pairs.
impl optin::KeyValues for Pairs {
    fn value(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }
}

impl From<BTreeMap<String, String>> for Pairs {
    fn from(map: BTreeMap<String, String>) -> Self {
        Pairs(
            map.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        )
    }
}

/// The store's key is the name and namespace only: the uid and
/// resourceVersion an `ObjectRef` may carry would be two more strings per
/// pod that nothing reads (the watcher tracks resource versions itself).
impl<K: Resource<DynamicType = ()>> Lookup for OptinMeta<K> {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }
    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }
    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }
    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// A `K` as the API server sends it, parsed into the few fields the
/// opt-in rules read (plus the resourceVersion the watcher resumes from).
/// Requested as metadata only (`PartialObjectMetadata`): the spec and
/// status of pods are not even sent.
#[derive(Debug)]
pub struct Wire<K> {
    metadata: ObjectMeta,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Wire<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Wire<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn metadata_api() -> bool {
        true
    }
}

impl<'de, K> Deserialize<'de> for Wire<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Fields not named here (apiVersion, kind, and in `metadata`
        // managedFields, ownerReferences, uid, ...) are skipped by serde
        // without being allocated.
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            metadata: Metadata,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Metadata {
            name: Option<String>,
            namespace: Option<String>,
            resource_version: Option<String>,
            deletion_timestamp: Option<Time>,
            labels: Option<BTreeMap<String, String>>,
            #[serde(default, deserialize_with = "optin_annotations")]
            annotations: Option<BTreeMap<String, String>>,
        }
        let Object { metadata: m } = Object::deserialize(deserializer)?;
        Ok(Wire {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                resource_version: m.resource_version,
                deletion_timestamp: m.deletion_timestamp,
                labels: m.labels,
                annotations: m.annotations,
                ..ObjectMeta::default()
            },
            kind: PhantomData,
        })
    }
}

/// The annotations the opt-in rules read; the values of the others are
/// skipped unparsed.
fn optin_annotations<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Annotations;
    impl<'de> Visitor<'de> for Annotations {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if optin::reads_annotation(&key) {
                    kept.insert(key, map.next_value::<String>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(kept))
        }
    }
    deserializer.deserialize_option(Annotations)
}

/// A cluster-wide watch of `K`'s opt-in metadata kept in a store: the
/// store, and the stream of touched objects that drives it.
pub fn watch<K>(
    client: kube::Client,
    config: watcher::Config,
) -> (
    Store<OptinMeta<K>>,
    impl Stream<Item = Result<(), watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + fmt::Debug + Send + Sync + 'static,
    K::Scope: Send,
{
    let (store, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(Api::<Wire<K>>::all(client), config)
            .default_backoff()
            .map_ok(trim),
    )
    .touched_objects()
    .map_ok(|_| ());
    (store, events)
}

fn trim<K>(event: watcher::Event<Wire<K>>) -> watcher::Event<OptinMeta<K>> {
    use watcher::Event;
    match event {
        Event::Apply(obj) => Event::Apply(obj.into()),
        Event::Delete(obj) => Event::Delete(obj.into()),
        Event::Init => Event::Init,
        Event::InitApply(obj) => Event::InitApply(obj.into()),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    /// A pod's metadata as the API server serves it, managedFields and all.
    const POD: &str = r#"{
      "kind": "PartialObjectMetadata",
      "apiVersion": "meta.k8s.io/v1",
      "metadata": {
        "name": "web-1",
        "generateName": "web-",
        "namespace": "shop",
        "uid": "8f0c5f0e-2d1b-4a3e-9c55-0d5a6e4b7c11",
        "resourceVersion": "4711",
        "creationTimestamp": "2026-01-02T03:04:05Z",
        "labels": {"app": "web", "pod-template-hash": "5d9f"},
        "annotations": {
          "ferrotel.io/instrument": "true",
          "ferrotel.io/language": "go",
          "instrumentation.opentelemetry.io/inject-python": "false",
          "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}",
          "prometheus.io/scrape": "true"
        },
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f", "uid": "1", "controller": true}],
        "finalizers": ["example.com/keep"],
        "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
          "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
          "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
      }
    }"#;

    #[test]
    fn keeps_what_the_optin_rules_read_and_nothing_else() {
        let wire: Wire<Pod> = serde_json::from_str(POD).expect("a pod's metadata parses");
        assert_eq!(
            wire.meta().resource_version.as_deref(),
            Some("4711"),
            "the watcher resumes from the resourceVersion"
        );
        let meta = OptinMeta::from(wire);
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        assert_eq!(&*meta.name, "web-1");
        assert_eq!(
            meta.labels.to_map(),
            BTreeMap::from([
                ("app".to_owned(), "web".to_owned()),
                ("pod-template-hash".to_owned(), "5d9f".to_owned())
            ]),
            "every label: pod selectors may read any"
        );
        let annotations = meta.annotations.to_map();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [
                "ferrotel.io/instrument",
                "ferrotel.io/language",
                "instrumentation.opentelemetry.io/inject-python"
            ],
            "only the annotations the rules read"
        );
        assert_eq!(annotations["ferrotel.io/language"], "go");
        assert!(!meta.deleting);
    }

    #[test]
    fn the_rules_read_every_pair_by_its_key() {
        use optin::KeyValues;
        let map: BTreeMap<String, String> = ["b", "d", "a", "c", "app.kubernetes.io/name", "e"]
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k.to_owned(), format!("value-{i}")))
            .collect();
        let pairs = Pairs::from(map.clone());
        for (key, value) in &map {
            assert_eq!(pairs.value(key), Some(value.as_str()), "{key}");
        }
        for absent in ["", "0", "aa", "app", "f", "z"] {
            assert_eq!(pairs.value(absent), None, "{absent}");
        }
        assert_eq!(Pairs::default().value("a"), None);
    }

    #[test]
    fn a_deletion_timestamp_marks_the_pod_as_leaving() {
        let json = r#"{"metadata": {"name": "a", "namespace": "b", "deletionTimestamp": "2026-01-02T03:04:05Z"}}"#;
        let meta = OptinMeta::from(serde_json::from_str::<Wire<Pod>>(json).expect("parses"));
        assert!(meta.deleting);
    }

    #[test]
    fn objects_without_labels_or_annotations_parse() {
        for json in [
            r#"{"metadata": {"name": "a", "namespace": "b"}}"#,
            r#"{"metadata": {"name": "a", "namespace": "b", "labels": null, "annotations": null}}"#,
        ] {
            let meta = OptinMeta::from(serde_json::from_str::<Wire<Pod>>(json).expect("parses"));
            assert_eq!(meta.labels, Pairs::default(), "{json}");
            assert_eq!(meta.annotations, Pairs::default(), "{json}");
        }
    }

    #[test]
    fn the_cache_key_is_the_name_and_namespace_only() {
        let meta = OptinMeta::from(serde_json::from_str::<Wire<Pod>>(POD).expect("parses"));
        let key = meta.to_object_ref(());
        assert_eq!(key, reflector::ObjectRef::new("web-1").within("shop"));
        assert_eq!(key.extra.resource_version, None);
        assert_eq!(key.extra.uid, None);
    }
}
