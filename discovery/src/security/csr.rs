//! Istio's `IstioCertificateService/CreateCertificate` (to be written).
