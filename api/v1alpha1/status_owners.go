package v1alpha1

import (
	"reflect"
	"slices"
	"strings"
)

// StatusOwner is the one component that writes a field of an APIKey's status.
type StatusOwner string

// The writers of APIKey status.
const (
	// StatusOwnerKeyController is the manager's APIKey controller: the key's record, conditions and
	// everything derived from them. The admission policy keyward-status-writers lets only the manager change
	// these fields.
	StatusOwnerKeyController StatusOwner = "KeyController"
	// StatusOwnerDelivery is the manager's delivery controller: status.webhook, the webhook delivery state.
	// The key controller appends to its outbox in the same status write that reports what the events
	// describe; the delivery controller writes the rest of it, with optimistic locking so that neither drops
	// the other's writes. Also the manager's only, by keyward-status-writers.
	StatusOwnerDelivery StatusOwner = "Delivery"
	// StatusOwnerVerifier is the verifier: status.usage, its counts of verifications. Anyone who may update
	// apikeys/status may write it; nothing Keyward trusts is read from it (the key controller reads only
	// each key's last use, for a warning).
	StatusOwnerVerifier StatusOwner = "Verifier"
	// StatusOwnerApprover is whoever holds the approve verb on apikeys: status.approval, through kubectl
	// keyward approve and deny. The admission policy keyward-apikey-approval checks the verb, the name and
	// what the decision covers; the manager may only remove the record once no policy requires approval.
	StatusOwnerApprover StatusOwner = "Approver"
	// StatusOwnerLeakReporter is whoever reports leaked keys: status.leaks, through the leak receiver or
	// kubectl keyward report-leak. The admission policy keyward-leak-reports lets them only add reports of
	// keys the APIKey has; the manager never writes it.
	StatusOwnerLeakReporter StatusOwner = "LeakReporter"
)

// StatusFieldOwners names, by JSON name, the owner of every field of APIKeyStatus: declared here once and
// used by the key controller's echo fingerprint and watch filter, the manager's cache trim and, through a
// test, compared with the keyward-status-writers admission policy. A field without an entry fails the API
// package's tests.
var StatusFieldOwners = map[string]StatusOwner{
	"observedGeneration":     StatusOwnerKeyController,
	"conditions":             StatusOwnerKeyController,
	"secretName":             StatusOwnerKeyController,
	"keyID":                  StatusOwnerKeyController,
	"keyHint":                StatusOwnerKeyController,
	"keyHash":                StatusOwnerKeyController,
	"revision":               StatusOwnerKeyController,
	"issuedAt":               StatusOwnerKeyController,
	"expiresAt":              StatusOwnerKeyController,
	"renewalTime":            StatusOwnerKeyController,
	"previousKeys":           StatusOwnerKeyController,
	"previousKeysInUse":      StatusOwnerKeyController,
	"lastRotationReason":     StatusOwnerKeyController,
	"lastHandledRotateToken": StatusOwnerKeyController,
	"recordSignature":        StatusOwnerKeyController,
	"webhook":                StatusOwnerDelivery,
	"usage":                  StatusOwnerVerifier,
	"approval":               StatusOwnerApprover,
	"leaks":                  StatusOwnerLeakReporter,
}

// statusFieldOwners is StatusFieldOwners by field index of APIKeyStatus.
var statusFieldOwners = func() []StatusOwner {
	t := reflect.TypeFor[APIKeyStatus]()
	out := make([]StatusOwner, t.NumField())
	for i := range t.NumField() {
		out[i] = StatusFieldOwners[StatusFieldName(t.Field(i))]
	}
	return out
}()

// StatusFieldName is the JSON name of a field of APIKeyStatus.
func StatusFieldName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// OwnedBy returns the fields of st that any of owners writes, the others left zero. It copies references
// (slices, pointers), so the result is for reading and comparing, not for writing in place.
func (st *APIKeyStatus) OwnedBy(owners ...StatusOwner) APIKeyStatus {
	var out APIKeyStatus
	src, dst := reflect.ValueOf(st).Elem(), reflect.ValueOf(&out).Elem()
	for i, o := range statusFieldOwners {
		if slices.Contains(owners, o) {
			dst.Field(i).Set(src.Field(i))
		}
	}
	return out
}
