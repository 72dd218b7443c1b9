"""Placing and stopping a release of the bot: as a plain process, or as a systemd unit."""

from controller.deploy.base import CallTimeout, Deployer, DeployError, Placement, Running
from controller.deploy.process import ProcessDeployer
from controller.deploy.systemd import SystemdDeployer

__all__ = ["CallTimeout", "DeployError", "Deployer", "Placement", "ProcessDeployer", "Running", "SystemdDeployer"]
