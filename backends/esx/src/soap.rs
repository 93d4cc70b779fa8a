//! A logged-in vSphere session: SOAP envelopes, faults, the session cookie.
//!
//! Every call is `<Method xmlns="urn:vim25"><_this type=…>…</_this>…</Method>` in an
//! envelope; the reply is `<MethodResponse>` or a SOAP fault whose `detail` names the
//! vSphere fault type. A call refused with `NotAuthenticated` (the session expired: vCenter
//! ends idle sessions after 30 minutes) logs in again and is sent once more, which is safe
//! because the server did not act on it.

use std::fmt;

use snaptree_sdk::{PluginError, PluginResult};

use crate::config::Credentials;
use crate::http::{Client, Endpoint, TlsOptions};
use crate::xml::{self, Element, SoapElement, escape};

/// The API version asked for: 6.5 has every call used here (suppressPowerOn, RetrievePropertiesEx)
/// and every supported ESX and vCenter release answers it; vcsim reports 6.5 itself.
const SOAP_ACTION: &str = "\"urn:vim25/6.5\"";

/// The cookie that carries the session.
const SESSION_COOKIE: &str = "vmware_soap_session";

/// A managed object reference: a type and an id (`VirtualMachine` `vm-42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    /// The managed object type.
    pub kind: String,
    /// The id.
    pub value: String,
}

impl MoRef {
    /// A reference from its parts.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> MoRef {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Reads a reference element (`<obj type="VirtualMachine">vm-42</obj>`).
    pub fn from_node(node: &Element) -> Option<MoRef> {
        let kind = node.attribute("type")?;
        let value = node.text.trim();
        (!value.is_empty()).then(|| MoRef::new(kind, value))
    }

    /// The reference as a request element named `tag`.
    pub fn to_xml(&self, tag: &str) -> String {
        format!(
            "<{tag} type=\"{}\">{}</{tag}>",
            escape(&self.kind),
            escape(&self.value)
        )
    }
}

impl fmt::Display for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// A fault vSphere answered with: its type (`InvalidLogin`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The vSphere fault type, or the SOAP fault code when the detail names none.
    pub kind: String,
    /// The server's message.
    pub message: String,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The server answered with a fault.
    Fault(Fault),
    /// Transport or protocol trouble; the sentence names the endpoint.
    Other(String),
}

impl CallError {
    /// The fault type, when the server answered with one.
    pub fn fault_kind(&self) -> Option<&str> {
        match self {
            CallError::Fault(f) => Some(&f.kind),
            CallError::Other(_) => None,
        }
    }

    /// A backend error: "vSphere refused METHOD: message (FaultType)".
    pub fn into_plugin(self, method: &str) -> PluginError {
        PluginError::backend(self.describe(method))
    }

    /// The error as a sentence about `method`.
    pub fn describe(&self, method: &str) -> String {
        match self {
            CallError::Fault(f) => format!("vSphere refused {method}: {} ({})", f.message, f.kind),
            CallError::Other(e) => format!("{method} failed: {e}"),
        }
    }
}

/// The managed objects of the service this backend uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContent {
    /// The root of the inventory.
    pub root_folder: MoRef,
    /// The property collector.
    pub property_collector: MoRef,
    /// The view manager (for finding a VM by name).
    pub view_manager: MoRef,
    /// The session manager.
    pub session_manager: MoRef,
    /// The product, as it names itself ("VMware ESXi 8.0.2 build-…").
    pub product: String,
}

/// A logged-in session with one endpoint.
pub struct Session {
    http: Client,
    credentials: Credentials,
    cookie: Option<String>,
    content: ServiceContent,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("endpoint", &self.http.endpoint().to_string())
            .field("user", &self.credentials.user)
            .field("product", &self.content.product)
            .finish()
    }
}

impl Session {
    /// Connects, reads the service content and logs in.
    pub fn connect(
        endpoint: Endpoint,
        tls: &TlsOptions,
        credentials: Credentials,
    ) -> PluginResult<Session> {
        let http = Client::new(endpoint, tls).map_err(PluginError::backend)?;
        let body = format!(
            "<RetrieveServiceContent xmlns=\"urn:vim25\">{}</RetrieveServiceContent>",
            MoRef::new("ServiceInstance", "ServiceInstance").to_xml("_this")
        );
        let (reply, _) =
            post(&http, None, &body).map_err(|e| e.into_plugin("RetrieveServiceContent"))?;
        let content = service_content(&reply).map_err(|e| {
            PluginError::backend(format!(
                "{} does not look like a vSphere endpoint: {e}",
                http.endpoint()
            ))
        })?;
        let mut session = Session {
            http,
            credentials,
            cookie: None,
            content,
        };
        session.login()?;
        Ok(session)
    }

    /// The service's managed objects.
    pub fn content(&self) -> &ServiceContent {
        &self.content
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.http.endpoint()
    }

    fn login(&mut self) -> PluginResult<()> {
        self.cookie = None;
        let body = format!(
            "<Login xmlns=\"urn:vim25\">{}<userName>{}</userName><password>{}</password></Login>",
            self.content.session_manager.to_xml("_this"),
            escape(&self.credentials.user),
            escape(self.credentials.password.expose())
        );
        let (_, cookies) = post(&self.http, None, &body).map_err(|e| match e.fault_kind() {
            Some("InvalidLogin") => PluginError::backend(format!(
                "{} refused the user name or password of user '{}' (InvalidLogin)",
                self.http.endpoint(),
                self.credentials.user
            )),
            _ => e.into_plugin("Login"),
        })?;
        let cookie = cookies
            .into_iter()
            .find(|c| c.split('=').next() == Some(SESSION_COOKIE));
        self.cookie = Some(cookie.ok_or_else(|| {
            PluginError::backend(format!(
                "{} accepted the login but set no {SESSION_COOKIE} cookie",
                self.http.endpoint()
            ))
        })?);
        Ok(())
    }

    /// Calls `method` on `this` with the given parameter elements (already XML) and returns
    /// the `<methodResponse>` element. A call refused because the session expired is sent
    /// again once after a new login.
    pub fn call(&mut self, method: &str, this: &MoRef, params: &str) -> Result<Element, CallError> {
        let body = format!(
            "<{method} xmlns=\"urn:vim25\">{}{params}</{method}>",
            this.to_xml("_this")
        );
        let first = post(&self.http, self.cookie.as_deref(), &body);
        let expired = match &first {
            Err(CallError::Fault(f)) => f.kind == "NotAuthenticated",
            Ok((reply, _)) => unauthenticated_properties(reply),
            Err(CallError::Other(_)) => false,
        };
        if !expired {
            return first.map(|(n, _)| n);
        }
        self.login()
            .map_err(|e| CallError::Other(e.message().to_string()))?;
        post(&self.http, self.cookie.as_deref(), &body).map(|(n, _)| n)
    }

    /// Like [`call`](Session::call), with errors as backend errors naming the method.
    pub fn invoke(&mut self, method: &str, this: &MoRef, params: &str) -> PluginResult<Element> {
        self.call(method, this, params)
            .map_err(|e| e.into_plugin(method))
    }

    /// Ends the session; errors are ignored (the server ends it anyway when it idles out).
    pub fn logout(&mut self) {
        if self.cookie.is_some() {
            let this = self.content.session_manager.clone();
            let _ = self.call("Logout", &this, "");
            self.cookie = None;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.logout();
    }
}

/// Posts an envelope; returns the body's first element (the response) and the cookies set.
fn post(
    http: &Client,
    cookie: Option<&str>,
    body: &str,
) -> Result<(Element, Vec<String>), CallError> {
    let envelope = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    );
    let mut headers = vec![
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", SOAP_ACTION),
    ];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    let reply = http.post(&headers, &envelope).map_err(CallError::Other)?;
    let parsed = if reply.body.trim().is_empty() {
        Err("an empty body".to_string())
    } else {
        xml::parse(&reply.body)
    };
    let root = match parsed {
        Ok(root) => root,
        Err(e) => {
            return Err(CallError::Other(format!(
                "{} answered HTTP {} with {e}; is it a vSphere SDK URL?",
                http.endpoint(),
                reply.status
            )));
        }
    };
    let first = root
        .path(&["Body"])
        .and_then(|b| b.children.first())
        .ok_or_else(|| {
            CallError::Other(format!(
                "{} answered HTTP {} without a SOAP body",
                http.endpoint(),
                reply.status
            ))
        })?;
    if first.name == "Fault" {
        return Err(CallError::Fault(fault(first)));
    }
    if reply.status != 200 {
        return Err(CallError::Other(format!(
            "{} answered HTTP {}",
            http.endpoint(),
            reply.status
        )));
    }
    Ok((first.clone(), reply.cookies))
}

/// Whether a property collector's answer says, property by property, that the session is
/// gone: vcsim answers `RetrievePropertiesEx` without a session with a `missingSet` of
/// `NotAuthenticated` faults rather than a fault of the call.
fn unauthenticated_properties(reply: &Element) -> bool {
    reply
        .children_named("returnval")
        .flat_map(|rv| rv.children_named("objects"))
        .flat_map(|o| o.children_named("missingSet"))
        .any(|m| {
            m.path(&["fault", "fault"]).and_then(Element::xsi_type) == Some("NotAuthenticated")
        })
}

/// Reads a SOAP fault: the vSphere type from the detail's element (`InvalidLoginFault`,
/// `xsi:type="InvalidLogin"`), the message from `faultstring`.
fn fault(node: &Element) -> Fault {
    let detail = node.child("detail").and_then(|d| d.children.first());
    let kind = detail
        .map(|d| {
            d.xsi_type().map_or_else(
                || d.name.trim_end_matches("Fault").to_string(),
                str::to_string,
            )
        })
        .or_else(|| node.child_text("faultcode").map(str::to_string))
        .unwrap_or_else(|| "unknown fault".into());
    let message = node
        .child_text("faultstring")
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or("no message");
    Fault {
        kind,
        message: message.to_string(),
    }
}

fn service_content(reply: &Element) -> Result<ServiceContent, String> {
    let rv = reply
        .child("returnval")
        .ok_or("no returnval in RetrieveServiceContent's answer")?;
    let moref = |name: &str| {
        rv.child(name)
            .and_then(MoRef::from_node)
            .ok_or_else(|| format!("its service content has no {name}"))
    };
    Ok(ServiceContent {
        root_folder: moref("rootFolder")?,
        property_collector: moref("propertyCollector")?,
        view_manager: moref("viewManager")?,
        session_manager: moref("sessionManager")?,
        product: rv
            .path(&["about", "fullName"])
            .map(|n| n.text.clone())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_faults_under_any_prefix() {
        let env = r#"<soapenv:Envelope xmlns:soapenv="e" xmlns:xsi="i"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Login failure</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let root = xml::parse(env).unwrap();
        let f = fault(root.path(&["Body", "Fault"]).unwrap());
        assert_eq!(
            f,
            Fault {
                kind: "InvalidLogin".into(),
                message: "Login failure".into()
            }
        );
        let bare = xml::parse("<Fault><faultcode>Client</faultcode></Fault>").unwrap();
        assert_eq!(
            fault(&bare),
            Fault {
                kind: "Client".into(),
                message: "no message".into()
            }
        );
        let untyped = xml::parse(
            "<Fault><faultstring>x</faultstring><detail><NotAuthenticatedFault/></detail></Fault>",
        )
        .unwrap();
        assert_eq!(fault(&untyped).kind, "NotAuthenticated");
    }
}
