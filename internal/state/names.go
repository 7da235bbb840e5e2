package state

import "regexp"

var appName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidAppName reports whether name is a valid app name: a DNS label
// (lower-case letters, digits and '-', at most 63). Fronts check it on
// deploy, nodes on apply and logs.
func ValidAppName(name string) bool { return appName.MatchString(name) }
