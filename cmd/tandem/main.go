// Command tandem runs a tandem node, a local cluster, or talks to a cluster.
package main

import (
	"os"

	"github.com/tandemhq/tandem/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
