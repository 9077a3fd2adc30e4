package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// flagError rewrites a flag parsing error so that it names the flag, the
// value given and what the flag expects, without Go's parser internals
// ("strconv.ParseInt: parsing ...").
func flagError(err error) error {
	var iv *pflag.InvalidValueError
	if !errors.As(err, &iv) {
		return err
	}
	f := iv.GetFlag()
	return fmt.Errorf("--%s %q: %s", f.Name, iv.GetValue(), expects(f))
}

// expects says what a flag of f's type takes, with its default as an
// example where that helps.
func expects(f *pflag.Flag) string {
	switch t := f.Value.Type(); {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		if strings.Contains(f.Name, "port") {
			return "want a port number, 1-65535 (default " + f.DefValue + ")"
		}
		return "want a whole number (default " + f.DefValue + ")"
	case t == "bool":
		return "want true or false"
	case t == "duration":
		return "want a duration such as 500ms, 2s or 1m (default " + f.DefValue + ")"
	case strings.HasPrefix(t, "float"):
		return "want a number"
	default:
		return "not valid for this flag (" + f.Usage + ")"
	}
}
