//! Writes the objects a resource owns: server-side apply under the operator's field manager
//! (forced: the operator is the one writer of what it declares), with the owner reference and
//! the owner labels of `build`, and deletion of the owned objects no longer desired, found by
//! those labels.
//!
//! Works for typed k8s-openapi objects (`DynamicType = ()`) and for [`DynamicObject`]s of
//! kinds that may not be installed (e.g. Gateway API's HTTPRoute), whose [`ApiResource`] is
//! passed as the dynamic type.
//!
//! [`DynamicObject`]: kube::api::DynamicObject
//! [`ApiResource`]: kube::api::ApiResource

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::NamespaceScope;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build;
use super::context::FIELD_MANAGER;
use super::error::Error;

/// An object kind the operator can own: namespaced, typed or dynamic.
pub trait Owned:
    Resource<Scope: NamespaceScope> + Clone + Debug + Serialize + DeserializeOwned
{
}

impl<T> Owned for T where
    T: Resource<Scope: NamespaceScope> + Clone + Debug + Serialize + DeserializeOwned
{
}

fn namespaced_api<T: Owned>(
    client: &Client,
    namespace: &str,
    dynamic_type: &T::DynamicType,
) -> Api<T> {
    Api::all_with(client.clone(), dynamic_type).constrain(namespace)
}

/// Server-side applies `object` in `owner`'s namespace as owned by `owner`: the owner
/// reference and the owner labels are added to what the builder set (a builder normally sets
/// them already with `build::owned_meta`). Applying the same object again changes nothing.
/// Returns the object as the API server stored it.
pub async fn apply_owned<O, T>(
    client: &Client,
    owner: &O,
    object: &T,
    dynamic_type: &T::DynamicType,
) -> Result<T, Error>
where
    O: Resource<DynamicType = ()>,
    T: Owned,
{
    let owner_name = describe(owner);
    let reference = build::owner_reference(owner).ok_or_else(|| Error::OwnerWithoutUid {
        owner: owner_name.clone(),
    })?;
    let namespace = owner.namespace().unwrap_or_default();
    let mut object = object.clone();
    let name = object.name_any();
    let meta = object.meta_mut();
    meta.namespace = Some(namespace.clone());
    meta.labels
        .get_or_insert_default()
        .extend(build::selector_labels(owner));
    let references = meta.owner_references.get_or_insert_default();
    if !references.iter().any(|r| r.uid == reference.uid) {
        references.push(reference);
    }
    let object_name = format!("{} {namespace}/{name}", T::kind(dynamic_type));
    let mut body = serde_json::to_value(&object).map_err(|error| Error::ApplyOwned {
        object: object_name.clone(),
        owner: owner_name.clone(),
        source: kube::Error::SerdeError(error),
    })?;
    // An apply patch must name its type; DynamicObjects may not carry it.
    if let Some(fields) = body.as_object_mut() {
        fields.insert("apiVersion".to_owned(), T::api_version(dynamic_type).into());
        fields.insert("kind".to_owned(), T::kind(dynamic_type).into());
    }
    let api = namespaced_api::<T>(client, &namespace, dynamic_type);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::ApplyOwned {
        object: object_name,
        owner: owner_name,
        source,
    })
}

/// Deletes the objects of type `T` that `owner` owns (its owner labels and its owner
/// reference) and whose names are not in `desired`. Returns the names it deleted. An object
/// gone meanwhile, or replaced by another with the same name, is left alone.
pub async fn prune_owned<O, T>(
    client: &Client,
    owner: &O,
    desired: &BTreeSet<String>,
    dynamic_type: &T::DynamicType,
) -> Result<Vec<String>, Error>
where
    O: Resource<DynamicType = ()>,
    T: Owned,
{
    let namespace = owner.namespace().unwrap_or_default();
    let kind = T::kind(dynamic_type).into_owned();
    let owner_name = describe(owner);
    let failed = |object: String| {
        let owner = owner_name.clone();
        move |source| Error::PruneOwned {
            object,
            owner,
            source,
        }
    };
    let Some(owner_uid) = owner.uid() else {
        return Err(Error::OwnerWithoutUid { owner: owner_name });
    };
    let api = namespaced_api::<T>(client, &namespace, dynamic_type);
    let listed = api
        .list(&ListParams::default().labels(&build::selector(owner)))
        .await
        .map_err(failed(format!("{kind} in {namespace}")))?;
    let mut deleted = Vec::new();
    for object in listed {
        let name = object.name_any();
        // Labels can be copied by hand; the owner reference is what makes it ours.
        if desired.contains(&name) || !owned_by(object.owner_references(), &owner_uid) {
            continue;
        }
        if delete_exactly(&api, &object)
            .await
            .map_err(failed(format!("{kind} {namespace}/{name}")))?
        {
            deleted.push(name);
        }
    }
    Ok(deleted)
}

/// Deletes `object` itself, not whatever bears its name now: the uid is a precondition.
/// `Ok(false)` when it is gone already (404) or was replaced by a new object of the same name
/// (409), which are left alone.
pub async fn delete_exactly<T: Owned>(api: &Api<T>, object: &T) -> Result<bool, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&object.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(source) => Err(source),
    }
}

/// Whether one of `references` makes the object with uid `uid` its controller.
pub fn owned_by(references: &[OwnerReference], uid: &str) -> bool {
    references
        .iter()
        .any(|reference| reference.uid == uid && reference.controller == Some(true))
}

fn describe<O: Resource<DynamicType = ()>>(owner: &O) -> String {
    format!(
        "{} {}/{}",
        O::kind(&()),
        owner.namespace().unwrap_or_default(),
        owner.name_any()
    )
}
