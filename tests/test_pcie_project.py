"""The Vivado project for the PCIe top: generated without Vivado, checked for what a build needs
(Vivado itself is not run here)."""

import re

import pytest
from amaranth import Fragment

from zipml.hw.axis import check_byte_core
from zipml.hw.pcie import FrameEcho, build_vivado_project, xdma_properties


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return build_vivado_project(tmp_path_factory.mktemp("pcie"), board="litefury")


def test_files_exist(project):
    for path in project.values():
        assert path.is_file() and path.stat().st_size > 0, path


def test_tcl_creates_and_configures_xdma(project):
    tcl = project["tcl"].read_text()
    assert "create_project -force -name zipml_pcie -part xc7a100tfgg484-2" in tcl
    assert re.search(r"create_ip -name xdma -vendor xilinx.com -library ip "
                     r"-module_name xdma_0\b", tcl)
    block = tcl[tcl.index("set_property -dict [list"):tcl.index("] [get_ips xdma_0]")]
    for key, value in {
        "xdma_axi_intf_mm": "AXI_Stream", "pl_link_cap_max_link_width": "X4",
        "pl_link_cap_max_link_speed": "2.5_GT/s", "axi_data_width": "64_bit",
        "axisten_freq": "125", "xdma_wnum_chnl": "1", "xdma_rnum_chnl": "1",
        "ref_clk_freq": "100_MHz", "pf0_device_id": "7014",
    }.items():
        assert f"CONFIG.{key} {{{value}}}" in block, key
    # The IP is generated before synthesis, and the flow runs to a bitstream.
    order = ["add_files zipml_pcie.v", "read_xdc zipml_pcie.xdc", 'read_xdc "pcie.xdc"',
             "create_ip", "generate_target all [get_ips xdma_0]", "synth_ip [get_ips xdma_0]",
             "synth_design -top zipml_pcie", "place_design", "route_design",
             "write_bitstream"]
    positions = [tcl.index(step) for step in order]
    assert positions == sorted(positions)
    assert "source zipml_pcie.tcl" in project["build_tcl"].read_text()


def test_verilog_top_and_xdma_instance(project):
    verilog = project["verilog"].read_text()
    assert re.search(r"^module zipml_pcie\(", verilog, re.M)
    assert re.search(r"^\s*xdma_0 xdma \(", verilog, re.M)
    assert re.search(r"^\s*IBUFDS_GTE2 ", verilog, re.M)
    for port in ("sys_clk", "sys_rst_n", "axi_aclk", "axi_aresetn", "pci_exp_rxp", "pci_exp_txp",
                 "m_axis_h2c_tdata_0", "m_axis_h2c_tkeep_0", "m_axis_h2c_tlast_0",
                 "m_axis_h2c_tvalid_0", "m_axis_h2c_tready_0", "s_axis_c2h_tdata_0",
                 "s_axis_c2h_tkeep_0", "s_axis_c2h_tlast_0", "s_axis_c2h_tvalid_0",
                 "s_axis_c2h_tready_0"):
        assert f".{port}(" in verilog, port


def test_constraints_place_pcie(project):
    xdc = project["xdc"].read_text()
    pins = {
        "pcie_x4_0__clk__p": "F6", "pcie_x4_0__clk__n": "E6", "pcie_x4_0__rst__io": "J1",
        **{f"pcie_x4_0__rx__p\\[{i}]": pin for i, pin in enumerate(["B10", "B8", "D11", "D9"])},
        **{f"pcie_x4_0__tx__p\\[{i}]": pin for i, pin in enumerate(["B6", "B4", "D5", "D7"])},
    }
    for port, pin in pins.items():
        assert f'set_property LOC {pin} [get_ports "{port}"]' in xdc, port
    assert re.search(r"create_clock -name pcie_x4_0__clk__p -period 10\.0 ", xdc)
    # Transceiver pins take no I/O standard.
    assert not re.search(r'IOSTANDARD .*\[get_ports "pcie_x4_0__(clk|rx|tx)__', xdc)
    assert "set_false_path -from [get_ports {pcie_x4_0__rst__io}]" in \
        project["pcie_xdc"].read_text()


def test_x1_gen2_and_nitefury(tmp_path):
    files = build_vivado_project(tmp_path, board="nitefury", lanes=1, gen=2)
    tcl, xdc = files["tcl"].read_text(), files["xdc"].read_text()
    assert "-part xc7a200tfbg484-2" in tcl
    assert "CONFIG.pl_link_cap_max_link_width {X1}" in tcl
    assert "CONFIG.pl_link_cap_max_link_speed {5.0_GT/s}" in tcl
    assert "CONFIG.pf0_device_id {7021}" in tcl
    assert 'set_property LOC B10 [get_ports "pcie_x1_0__rx__p"]' in xdc
    assert "B8" not in xdc


def test_rejects_links_wider_than_64_bits_at_125_mhz():
    with pytest.raises(ValueError):
        xdma_properties(lanes=4, gen=2)
    with pytest.raises(ValueError):
        xdma_properties(lanes=8, gen=1)


def test_core_must_be_a_byte_stream():
    with pytest.raises(TypeError):
        check_byte_core(object())
    core = FrameEcho(timeout=10)
    check_byte_core(core)
    Fragment.get(core, None)                        # and it elaborates
