package front

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/herd-run/herd/internal/certs"
	"github.com/herd-run/herd/internal/cli"
	"github.com/herd-run/herd/internal/herdconfig"
	"github.com/herd-run/herd/internal/pki"
)

// AdminConfig is the herdctl config the first front writes in its data dir.
const AdminConfig = "admin.herdctl"

// controlPolicy says who may call what on a front's gRPC port: operators
// change the desired state, read-only operators look, nodes fetch their
// artifacts and assignments and report their state, fronts forward calls
// and copy artifacts, and anyone with the cluster key may ask to be
// certified.
func controlPolicy(b *pki.Bundle) *certs.Policy {
	pool, _ := b.Pool()
	const svc = "/herd.v1.Control/"
	write := []string{pki.RoleOperator, pki.RoleFront}
	read := []string{pki.RoleOperator, pki.RoleReader, pki.RoleFront}
	roles := map[string][]string{
		svc + "FetchArtifact": {pki.RoleNode, pki.RoleFront},
		svc + "GetAssignment": {pki.RoleNode, pki.RoleFront},
		svc + "ReportState":   {pki.RoleNode},
		svc + "PullArtifact":  {pki.RoleFront},
	}
	for _, m := range []string{"StatArtifact", "UploadArtifact", "Deploy", "Rollback", "Scale", "Restart", "Destroy", "Drain", "Undrain", "RemovePeer",
		"AddOperator", "RevokeOperator", "ListOperators"} {
		roles[svc+m] = write
	}
	for _, m := range []string{"Status", "ListNodes", "Logs", "History", "ListPeers"} {
		roles[svc+m] = read
	}
	for _, m := range []string{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"} {
		roles[m] = read
	}
	public := map[string]bool{"/herd.v1.Join/Certify": true}
	for m := range cli.HealthMethods {
		public[m] = true
	}
	return &certs.Policy{Pool: pool, Roles: roles, Public: public}
}

// writeAdminConfig writes <data-dir>/admin.herdctl once: the operator
// "admin" with full rights, mode 0600.
func writeAdminConfig(dataDir string, ca *pki.CA, grpcAddr string, log *slog.Logger) error {
	path := filepath.Join(dataDir, AdminConfig)
	if _, err := os.Stat(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	b, err := certs.IssueOperator(ca, "admin", pki.RoleOperator)
	if err != nil {
		return err
	}
	f := &herdconfig.File{Addrs: []string{grpcAddr}, Name: "admin", Role: pki.RoleOperator, CA: string(b.CAPEM), Cert: string(b.CertPEM), Key: string(b.KeyPEM)}
	if err := herdconfig.Write(path, f); err != nil {
		return err
	}
	log.Info("wrote the admin's herdctl config: herdctl --config FILE, or HERD_CONFIG=FILE", "file", path)
	return nil
}
