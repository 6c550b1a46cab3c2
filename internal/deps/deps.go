// Package deps pins the project's dependencies in go.mod while the packages
// that use them are written. It is imported by nothing and will go away.
package deps

import (
	_ "github.com/aws/aws-sdk-go-v2/aws"
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/credentials"
	_ "github.com/aws/aws-sdk-go-v2/service/ec2"
	_ "github.com/aws/smithy-go"
	_ "github.com/bradleyfalzon/ghinstallation/v2"
	_ "github.com/google/go-github/v60/github"
	_ "github.com/gophercloud/gophercloud/v2"
	_ "github.com/gophercloud/gophercloud/v2/openstack"
	_ "github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	_ "github.com/hibiken/asynq"
	_ "github.com/labstack/echo/v4"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/redis/go-redis/v9"
	_ "golang.org/x/crypto/ssh"
	_ "golang.org/x/term"
	_ "gopkg.in/yaml.v3"
)
