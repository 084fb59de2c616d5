// Command kubectl-keyward is a kubectl plugin for the everyday actions on API keys: list, create, rotate,
// revoke, disable and enable, reveal, verify, test the webhook and show status. Install it on your PATH
// as kubectl-keyward and run `kubectl keyward --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/keyward-dev/keyward/internal/plugin"
	"github.com/keyward-dev/keyward/internal/version"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		// Errors quote what tenants and servers wrote: escaped like everything else the plugin prints.
		fmt.Fprintln(os.Stderr, "Error:", plugin.Escape(err.Error()))
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:           "kubectl-keyward",
		Short:         "Manage Keyward API keys: list, create, rotate, revoke, reveal, verify",
		Version:       version.Version + " (" + version.Revision + ")",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	flags.AddFlags(root.PersistentFlags())
	env := func(cmd *cobra.Command) (*plugin.Plugin, string, error) {
		cfg, err := flags.ToRESTConfig()
		if err != nil {
			return nil, "", err
		}
		c, err := client.New(cfg, client.Options{Scheme: plugin.Scheme()})
		if err != nil {
			return nil, "", err
		}
		ns, _, err := flags.ToRawKubeConfigLoader().Namespace()
		if err != nil {
			return nil, "", err
		}
		return &plugin.Plugin{Client: c, Out: cmd.OutOrStdout(), Now: time.Now}, ns, nil
	}
	run := func(f func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			p, ns, err := env(cmd)
			if err != nil {
				return err
			}
			return f(cmd.Context(), p, ns, args)
		}
	}

	var allNamespaces bool
	var selector string
	list := &cobra.Command{Use: "list", Short: "List API keys: ID, masked key, created, expires, scopes, state", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, _ []string) error {
			return p.List(ctx, ns, allNamespaces, selector)
		})}
	list.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "List across all namespaces.")
	list.Flags().StringVarP(&selector, "selector", "l", "", "Label selector.")

	var co plugin.CreateOptions
	var dryRun, output string
	create := &cobra.Command{Use: "create NAME", Short: "Create an API key (--dry-run=client -o yaml prints it for GitOps)", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			co.DryRun = dryRun == "client"
			if dryRun != "" && dryRun != "none" && dryRun != "client" {
				return fmt.Errorf("--dry-run must be none or client")
			}
			if co.DryRun && output != "yaml" {
				return fmt.Errorf("--dry-run=client needs -o yaml")
			}
			return p.Create(ctx, ns, args[0], co)
		})}
	create.Flags().StringSliceVar(&co.Scopes, "scopes", nil, "Scopes, comma-separated; spaces around them are dropped (\"*\" for unrestricted).")
	create.Flags().StringVar(&co.Validity, "validity", "", "Validity: 30d, 60d, 90d, 6mo, 1y, ... (default 90d).")
	create.Flags().StringVar(&co.Description, "description", "", "What the key is for.")
	create.Flags().StringVar(&co.DisplayName, "display-name", "", "A human-readable name, shown in dashboards and webhook payloads.")
	create.Flags().StringVar(&co.Prefix, "prefix", "", "The key's public prefix before the underscore (ord gives ord_...; default kw).")
	create.Flags().StringVar(&co.ExpiresAt, "expires-at", "", "A fixed expiry in RFC 3339 (2027-03-31T00:00:00Z) instead of --validity; never rotated.")
	create.Flags().StringVar(&co.RateLimit, "rate-limit", "", "REQUESTS/PERIOD the verifier allows, for example 100/1m.")
	create.Flags().StringVar(&co.WebhookURL, "webhook-url", "", "HTTPS endpoint for lifecycle webhooks.")
	create.Flags().StringVar(&co.WebhookSecret, "webhook-secret-ref", "", "Secret holding the whsec_ signing secret (key \"secret\").")
	create.Flags().StringVar(&dryRun, "dry-run", "none", "client: print the APIKey instead of creating it.")
	create.Flags().StringVarP(&output, "output", "o", "", "yaml, with --dry-run=client.")

	var ro plugin.RotateOptions
	var noWait bool
	rotate := &cobra.Command{Use: "rotate NAME", Short: "Mint a new key now and print its ID (--grace 0s for a leaked key: every earlier key stops)", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			if noWait {
				ro.Wait = 0
			}
			return p.Rotate(ctx, ns, args[0], ro)
		})}
	rotate.Flags().StringVar(&ro.Grace, "grace", "", "How long the replaced key keeps working (sets spec.rotation.gracePeriod).")
	rotate.Flags().DurationVar(&ro.Wait, "timeout", time.Minute, "How long to wait for the new key.")
	rotate.Flags().BoolVar(&noWait, "no-wait", false, "Return once the rotation is asked for, without waiting for the new key.")

	var keyID string
	revoke := &cobra.Command{Use: "revoke NAME --key-id kid_...", Short: "Stop one key by ID at once", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.Revoke(ctx, ns, args[0], keyID)
		})}
	revoke.Flags().StringVar(&keyID, "key-id", "", "The key's ID (kid_...).")
	_ = revoke.MarkFlagRequired("key-id")

	disable := &cobra.Command{Use: "disable NAME", Short: "Reject every key of the API key (reversible)", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.SetDisabled(ctx, ns, args[0], true)
		})}
	enable := &cobra.Command{Use: "enable NAME", Short: "Accept the API key's keys again", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.SetDisabled(ctx, ns, args[0], false)
		})}

	var force bool
	reveal := &cobra.Command{Use: "reveal NAME", Short: "Print the current key from its Secret (each time; to a terminal only unless --force)", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.Reveal(ctx, ns, args[0], term.IsTerminal(int(os.Stdout.Fd())), force)
		})}
	reveal.Flags().BoolVar(&force, "force", false, "Print even when the output is not a terminal.")

	var scopes []string
	var verifierURL, keyFile string
	verify := &cobra.Command{Use: "verify [--file PATH]",
		Short: "Check a key, read from standard input or --file, offline, then with the verifier when --verifier-url is given",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return errors.New("pass the key on standard input or with --file, not as an argument: shell history and process listings keep arguments")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := cmd.InOrStdin()
			if keyFile != "" && keyFile != "-" {
				f, err := os.Open(keyFile)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			key, err := plugin.ReadKey(in)
			if err != nil {
				return err
			}
			p := &plugin.Plugin{Out: cmd.OutOrStdout(), Now: time.Now}
			return p.Verify(cmd.Context(), key, scopes, verifierURL)
		}}
	verify.Flags().StringVarP(&keyFile, "file", "f", "-", "Read the key from this file (- for standard input).")
	verify.Flags().StringSliceVar(&scopes, "scopes", nil, "Scopes the key must grant, comma-separated (needs --verifier-url).")
	verify.Flags().StringVar(&verifierURL, "verifier-url", "", "The verifier's base URL, for POST /v1/verify.")

	webhook := &cobra.Command{Use: "webhook", Short: "Webhook actions"}
	webhook.AddCommand(&cobra.Command{Use: "test NAME", Short: "Send one webhook.test", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.TestWebhook(ctx, ns, args[0])
		})})

	status := &cobra.Command{Use: "status NAME", Short: "The API key, its Secret's metadata, previous keys, events and webhook state", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.Status(ctx, ns, args[0])
		})}

	usage := &cobra.Command{Use: "usage NAME", Short: "Requests per key ID: last used, valid, rate limited, rejected by code", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.Usage(ctx, ns, args[0])
		})}

	policy := &cobra.Command{Use: "policy", Short: "The APIKeyPolicies and whether each applies to the namespace (-n)", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, _ []string) error {
			return p.Policies(ctx, ns)
		})}

	approve := &cobra.Command{Use: "approve NAME", Short: "Approve the API key's scopes, validity and rate limit as they are (needs the approve verb; not your own change)",
		Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.Approve(ctx, ns, args[0])
		})}
	var reason string
	deny := &cobra.Command{Use: "deny NAME --reason TEXT", Short: "Deny the API key's spec as it is; it stalls until its spec changes", Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, args []string) error {
			return p.Deny(ctx, ns, args[0], reason)
		})}
	deny.Flags().StringVar(&reason, "reason", "", "Why, so that whoever asked knows what to change.")
	_ = deny.MarkFlagRequired("reason")

	var leakFile, where string
	var leakAll bool
	reportLeak := &cobra.Command{Use: "report-leak [--file PATH] [--where URL]",
		Short: "Report keys found where they should not be (read from standard input or --file, one per line); each APIKey's leakResponse acts",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return errors.New("pass the keys on standard input or with --file, not as arguments: shell history and process listings keep arguments")
			}
			return nil
		},
		RunE: run(func(ctx context.Context, p *plugin.Plugin, ns string, _ []string) error {
			in := io.Reader(os.Stdin)
			if leakFile != "" && leakFile != "-" {
				f, err := os.Open(leakFile)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			found, err := plugin.ReadKeys(in)
			if err != nil {
				return err
			}
			return p.ReportLeak(ctx, ns, leakAll, found, where)
		})}
	reportLeak.Flags().StringVarP(&leakFile, "file", "f", "-", "Read the keys from this file (- for standard input).")
	reportLeak.Flags().StringVar(&where, "where", "", "Where the keys were found (a URL, a ticket), recorded with the report.")
	reportLeak.Flags().BoolVarP(&leakAll, "all-namespaces", "A", false, "Look for the keys' APIKeys in every namespace you may list.")

	root.AddCommand(list, create, rotate, revoke, disable, enable, reveal, verify, webhook, status, usage, policy, approve, deny, reportLeak)
	return root
}
